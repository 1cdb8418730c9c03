"""Black-box contract suite: the behaviour README.md and docs/protocol.md promise, checked
over raw sockets (both framings) and through both clients, against a real server."""
