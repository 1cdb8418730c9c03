"""The blocking client's socket: threads that must not wait (the reader sending a cancel
or a ping) never block, and nothing they send is lost or reordered."""

from __future__ import annotations

import socket
import threading

from pymprpc.client.sync_io import SocketIO


def fill(sock: socket.socket) -> int:
    """Write until the socket's buffers are full; how many bytes that took."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"f" * 65536)
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return total


def test_send_soon_never_waits_for_a_peer_that_does_not_read() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        io = SocketIO(ours)
        filled = fill(ours)
        io.send_soon([b"cancel-1"])  # returns although nothing fits: bounded by the test
        io.send_soon([b"cancel-2"])
        received = bytearray()

        def read_all(expected: int) -> None:
            while len(received) < expected:
                received.extend(peer.recv(1 << 20))

        reader = threading.Thread(target=read_all, args=(filled + len(b"cancel-1cancel-2"),))
        reader.start()
        while reader.is_alive():
            io.flush()  # what the reader thread does each time it wakes
            reader.join(0.01)
        assert bytes(received[filled:]) == b"cancel-1cancel-2"


def test_a_writer_sends_what_send_soon_left_first() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        io = SocketIO(ours)
        filled = fill(ours)
        io.send_soon([b"<early>"])
        received = bytearray()

        def read_all() -> None:
            while len(received) < filled + len(b"<early><late>!"):
                received.extend(peer.recv(1 << 20))

        reader = threading.Thread(target=read_all)
        reader.start()
        assert io.acquire(None)
        try:
            io.write([b"<late>", b"!"])  # waits for the peer: that is a writer's right
        finally:
            io.release()
        reader.join(10)
        assert bytes(received[filled:]) == b"<early><late>!"
