# Makes generated packages siblings, so one can import another's types.
