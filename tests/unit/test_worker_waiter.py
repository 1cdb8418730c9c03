"""How a process-pool worker waits for its next call (`child.Waiter`): it spins only
while calls arrive back to back, never longer than its window, and never with a window
of 0. Driven by a fake clock and a fake `poll`, so nothing here depends on timing."""

from __future__ import annotations

import math

import pytest

from pymprpc.server import Server
from pymprpc.server.workers.child import Waiter
from pymprpc.server.workers.pool import DEFAULT_SPIN, ProcessPool, default_size
from pymprpc.server.workers.targets import TargetTable


class FakeSocket:
    """A poll() whose socket becomes readable after `ready_after` seconds of a fake
    clock; non-blocking polls and yields each advance the clock a little."""

    def __init__(self, step: float = 10e-6) -> None:
        self.now = 0.0
        self.step = step
        self.ready_at = math.inf
        self.polls: list[float | None] = []
        self.slept_at: list[float] = []  # the clock when each blocking poll began
        self.yields = 0

    def arrive_in(self, seconds: float) -> None:
        self.ready_at = self.now + seconds

    def clock(self) -> float:
        return self.now

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        self.polls.append(timeout)
        if timeout is None:  # blocks until the frame is there
            self.slept_at.append(self.now)
            self.now = max(self.now, self.ready_at)
        else:
            self.now += self.step
        return [(3, 1)] if self.now >= self.ready_at else []

    def sched_yield(self) -> None:
        self.yields += 1
        self.now += self.step


def waiter(sock: FakeSocket, window: float) -> Waiter:
    return Waiter(sock.poll, window, clock=sock.clock, yield_cpu=sock.sched_yield)


def test_a_window_of_zero_always_sleeps_at_once() -> None:
    sock = FakeSocket()
    w = waiter(sock, 0.0)
    for gap in (1e-6, 50e-6, 1.0):
        sock.arrive_in(gap)
        w.wait()
    assert sock.polls == [None, None, None]
    assert sock.yields == 0


def test_the_first_wait_sleeps_and_a_short_one_makes_the_next_spin() -> None:
    sock = FakeSocket()
    w = waiter(sock, 300e-6)
    sock.arrive_in(100e-6)
    w.wait()
    assert sock.polls == [None]  # nothing known yet about how calls arrive
    assert w.spinning
    sock.polls.clear()
    sock.arrive_in(100e-6)
    w.wait()
    assert None not in sock.polls  # caught while spinning: never slept
    assert len(sock.polls) >= 2 and sock.yields >= 1  # yielded the CPU between polls
    assert sock.now >= sock.ready_at
    assert w.spinning


def test_a_spin_that_misses_sleeps_after_its_window_and_the_next_wait_does_not_spin() -> None:
    sock = FakeSocket()
    w = waiter(sock, 300e-6)
    sock.arrive_in(10e-6)
    w.wait()
    sock.polls.clear()
    start = sock.now
    sock.arrive_in(5.0)  # the client stopped for a while
    w.wait()
    assert sock.polls[-1] is None  # slept in the end
    assert sock.polls.count(0) >= 10  # it did spin first
    assert sock.slept_at[-1] - start <= 300e-6 + 2 * sock.step  # for its window, no more
    assert sock.now == pytest.approx(start + 5.0)
    assert not w.spinning
    sock.polls.clear()
    sock.arrive_in(1.0)
    w.wait()
    assert sock.polls == [None]  # sparse calls: sleeps at once, no spinning


def test_a_quick_call_after_a_long_gap_turns_spinning_back_on() -> None:
    sock = FakeSocket()
    w = waiter(sock, 300e-6)
    sock.arrive_in(2.0)
    w.wait()
    assert not w.spinning
    sock.arrive_in(20e-6)
    w.wait()  # slept, but woke within the window
    assert w.spinning


def test_a_closed_socket_ends_a_spin() -> None:
    sock = FakeSocket()
    w = waiter(sock, 300e-6)
    w.spinning = True
    sock.arrive_in(0.0)  # POLLHUP counts as readable: the worker then reads EOF
    w.wait()
    assert sock.polls == [0]


@pytest.mark.parametrize("bad", [-1, -0.0001, math.nan, math.inf, 10**400, True, "0.001", [0.1]])
def test_worker_spin_must_be_a_finite_number_of_seconds(bad: object) -> None:
    with pytest.raises(ValueError, match="worker_spin"):
        Server(("127.0.0.1", 0), worker_spin=bad)  # type: ignore[arg-type]


def test_an_int_window_is_kept_as_a_float() -> None:
    assert type(Server(("127.0.0.1", 0), worker_spin=1).config.worker_spin) is float
    assert Server(("127.0.0.1", 0), worker_spin=0).config.worker_spin == 0.0


def test_worker_spin_reaches_the_pool() -> None:
    assert Server(("127.0.0.1", 0), worker_spin=0.002).config.worker_spin == 0.002
    assert ProcessPool(TargetTable(), 1, 0.002).spin == 0.002
    assert ProcessPool(TargetTable(), 1, 0).spin == 0
    expected = DEFAULT_SPIN if default_size() > 1 else 0.0
    assert ProcessPool(TargetTable(), 1).spin == expected
