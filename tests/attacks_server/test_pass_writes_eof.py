"""Replies held to the end of a loop pass (a server with more than one connection open)
against a client that half-closes right after its calls: every call still gets its reply.

uvloop reads a socket until it would block, so calls and the EOF after them arrive in the
same pass, before the held replies are written; asyncio reads once per pass. Both loops,
and the general path (an interceptor) for reference."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .fastlane_kit import State, Wire, call, code, mid, passthrough, result, run_on, serving

N = 50


async def _half_close_after_calls(interceptors: list[Any]) -> list[Any]:
    async with serving(State(), interceptors=interceptors) as (_server, port):
        others = [await Wire.open(port) for _ in range(3)]  # more than one connection
        wire = await Wire.open(port)
        try:
            # Every call and the EOF in one write: one read, then EOF, on the server.
            wire.write([call(f"c{i}", "add", i, 1) for i in range(N)])
            wire.writer.write_eof()
            replies: list[Any] = []
            while len(replies) < N:
                try:
                    replies.append(await wire.recv())
                except asyncio.IncompleteReadError:
                    break
            return replies
        finally:
            for other in others:
                await other.close()
            await wire.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("path", ["fast", "general"])
def test_calls_then_eof_get_every_reply_with_other_connections_open(loop: str, path: str) -> None:
    interceptors = [] if path == "fast" else [passthrough]
    for _ in range(5):  # the EOF lands in the calls' pass only some of the time
        replies = run_on(loop, lambda: _half_close_after_calls(interceptors))
        assert [(mid(m), code(m), result(m)) for m in replies] == [
            (f"c{i}", 200, i + 1) for i in range(N)
        ]


READ = 256 * 1024  # the server's read size (pymprpc.readbuffer.READ_SIZE)


def _exact_frames(wire: Wire, n: int, total: int) -> tuple[bytes, list[str]]:
    """`n` echo calls laid out as our client writes them (36-character IDs), padded so
    their frames fill exactly `total` bytes: a read of that size ends on a frame's end."""
    ids = [f"c0ffee00-0000-4000-8000-{i:012d}" for i in range(n)]
    each = total // n
    frames = []
    for id in ids:
        frame = wire.frame(call(id, "echo", ""))
        pad = each - len(frame)
        frame = wire.frame(call(id, "echo", "x" * pad))
        while len(frame) > each:  # the string's header grew with it
            pad -= 1
            frame = wire.frame(call(id, "echo", "x" * pad))
        assert len(frame) == each, (len(frame), each)
        frames.append(frame)
    return b"".join(frames), ids


async def _full_read_then_eof() -> tuple[list[Any], int]:
    async with serving(State()) as (_server, port):
        others = [await Wire.open(port) for _ in range(3)]
        wire = await Wire.open(port)
        try:
            data, ids = _exact_frames(wire, 64, READ)
            assert len(data) == READ
            wire.writer.write(data)
            wire.writer.write_eof()
            replies: list[Any] = []
            while len(replies) < len(ids):
                try:
                    replies.append(await wire.recv())
                except asyncio.IncompleteReadError:
                    break
            return [mid(m) for m in replies], len(ids)
        finally:
            for other in others:
                await other.close()
            await wire.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_full_read_of_whole_calls_then_eof_gets_every_reply(loop: str) -> None:
    """A read that fills the read buffer exactly (so uvloop reads on and finds the EOF in
    the same pass), of whole laid-out calls, on a server with other connections open."""
    for _ in range(20):
        got, n = run_on(loop, _full_read_then_eof)
        assert len(got) == n, f"{n - len(got)} of {n} replies lost"
