"""Committed output of `mprpcgen idl/*.idl -o generated_examples` (`make generate`)."""
