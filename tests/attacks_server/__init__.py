"""Attacks on the server by an independent tester (raw wire, subprocess servers)."""
