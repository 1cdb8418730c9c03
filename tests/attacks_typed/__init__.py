"""Black-box attacks on typed calls (mprpcgen + pymprpc) by an independent tester."""
