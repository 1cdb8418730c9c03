"""`python -m bench.wakeups [--calls N] [--rounds R] [--spin US]`: what one more process
hop costs a sequential call on this machine, with no framework at all.

A client sends 20 bytes over TCP loopback and waits for them back, `--calls` times in a
row, against two raw servers (blocking sockets, no Python beyond a `recv` and a `send`):
**direct** answers itself; **hop** passes each message through one worker process over
a socketpair (the worker sleeps in `poll`, as the process pool's workers do) and answers
with the worker's reply. Rounds alternate the two; medians are reported.

`direct / hop` (calls/s) is the most a process pool's W1 could reach against a coroutine
handler here if neither spent any time in Python: the hop adds two wake-ups of a
sleeping process (server to worker, worker to server) to the call's two (client to
server, server to client). On a virtual machine whose idle CPUs halt without polling, a
wake-up is tens of microseconds (see bench/README.md, "Where the time goes (the process
pool)"), so this ceiling is well below 1 and moves with what else the machine runs.
Prints one JSON line: {"direct_us", "hop_us", "ceiling"}.

`--spin US`: the worker, once it has answered, polls for the next message for up to US
microseconds (yielding its CPU between polls) before it sleeps, as the pool's workers
do while their calls arrive back to back (`Server(worker_spin=...)`). The server's
write then finds the worker awake, and the hop's cost is what is left.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import time
from typing import Any

MESSAGE = b"x" * 20


def _worker(sock: socket.socket, spin: float = 0.0) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        end = time.perf_counter() + spin
        while spin and not poller.poll(0):
            os.sched_yield()
            if time.perf_counter() > end:
                break
        poller.poll()
        data = sock.recv(64)
        if not data:
            return
        sock.sendall(data)


def _serve(listener: socket.socket, hop: socket.socket | None) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(64)
        if not data:
            return
        if hop is not None:
            hop.sendall(data)
            data = hop.recv(64)
        conn.sendall(data)


def _child(close: list[socket.socket], run: Any, *args: object) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            for sock in close:  # the other ends: EOF must reach whoever waits on them
                sock.close()
            run(*args)
        finally:
            os._exit(0)
    return pid


def one_round(calls: int, with_hop: bool, spin: float = 0.0) -> float:
    """Microseconds per sequential call against a fresh raw server (and worker)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    pids = []
    ours, theirs = socket.socketpair()
    if with_hop:
        pids.append(_child([listener, ours], _worker, theirs, spin))
    pids.append(_child([theirs], _serve, listener, ours if with_hop else None))
    listener.close()
    ours.close()
    theirs.close()
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for _ in range(min(300, calls)):  # warm-up
            client.sendall(MESSAGE)
            client.recv(64)
        start = time.perf_counter()
        for _ in range(calls):
            client.sendall(MESSAGE)
            client.recv(64)
        return (time.perf_counter() - start) / calls * 1e6
    finally:
        client.close()
        for pid in pids:
            os.waitpid(pid, 0)


def measure(calls: int = 3000, rounds: int = 5, spin: float = 0.0) -> dict[str, float]:
    """Alternate direct and hop rounds; medians, and direct/hop as calls/s."""
    direct, hop = [], []
    for _ in range(rounds):
        direct.append(one_round(calls, False))
        hop.append(one_round(calls, True, spin))
    d, h = statistics.median(direct), statistics.median(hop)
    return {"direct_us": d, "hop_us": h, "ceiling": d / h}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spin", type=float, default=0.0, help="the worker's spin, µs")
    args = parser.parse_args()
    print(json.dumps(measure(args.calls, args.rounds, args.spin * 1e-6)))


if __name__ == "__main__":
    main()
