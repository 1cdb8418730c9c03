"""Checking a server's `ssl.SSLContext` before it serves (sans-IO: a handshake in memory).

A context that cannot serve fails every client's handshake, which each client reports as
"the server closed the connection during TLS", and the server's own view of it is one
log line per connection. Two deployment mistakes make such a context, and both are
caught here, when the `Server` is made: a client-side context
(`ssl.create_default_context()` without `Purpose.CLIENT_AUTH`), and a server context
with no certificate loaded.
"""

from __future__ import annotations

import ssl

_ROUNDS = 8  # a TLS 1.3 or 1.2 handshake takes at most 4 flights each way


def check_server_context(context: ssl.SSLContext) -> None:
    """Raise ValueError, saying what to do, if `context` cannot serve TLS clients: a
    handshake with a client that checks nothing runs in memory against it (not for a
    context with an `sni_callback`, which may supply the certificates). Other failures
    (a client certificate required, say) are the clients' business."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        server = context.wrap_bio(server_in, server_out, server_side=True)
    except ssl.SSLError as exc:
        raise ValueError(
            f"ssl= cannot serve: {exc.strerror or exc}. A server needs a server-side "
            "context: ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) or "
            "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), with load_cert_chain(cert, key)"
        ) from None
    if context.sni_callback is not None:
        # Its certificates may come from the callback (a context per server name), which
        # must not be called before a client is there.
        return
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    client = probe.wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(_ROUNDS):
        for side, out, peer_in in (
            (client, client_out, server_in),
            (server, server_out, client_in),
        ):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if side is server and exc.reason == "NO_SHARED_CIPHER":
                    raise ValueError(
                        "ssl= cannot serve: no TLS client can agree on a cipher with it "
                        "(no certificate loaded, or none its ciphers can use): call "
                        "context.load_cert_chain(certfile, keyfile) before Server(ssl=...)"
                    ) from None
                return  # not a mistake of the context's alone
            data = out.read()
            if data:
                peer_in.write(data)
