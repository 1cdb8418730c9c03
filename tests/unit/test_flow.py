"""The server-wide input budget, driven with fake connections."""

from __future__ import annotations

from pymprpc.server.flow import InputBudget


class FakeReader:
    def __init__(self) -> None:
        self.reading = True

    def pause_input(self) -> None:
        self.reading = False

    def resume_input(self) -> None:
        self.reading = True


def test_reads_that_exceed_the_budget_pause_until_bytes_are_freed() -> None:
    budget = InputBudget(1000)
    a, b, c = FakeReader(), FakeReader(), FakeReader()
    budget.update(a, 600)
    budget.update(b, 600)  # over: b pauses, a reads on
    budget.update(c, 100)  # still over: c pauses too
    assert (a.reading, b.reading, c.reading) == (True, False, False)
    assert budget.used == 1300 and budget.paused == 2
    budget.update(a, 0)  # a's frame completed: 700 used, within budget, all resume
    assert b.reading and c.reading and budget.paused == 0


def test_one_connection_always_reads_on() -> None:
    budget = InputBudget(1000)
    a, b = FakeReader(), FakeReader()
    budget.update(a, 1500)  # alone over the budget: pausing it would stall everyone
    assert a.reading
    budget.update(b, 10)
    assert not b.reading
    budget.update(a, 1400)  # a freed some bytes: the longest waiting reader resumes
    assert b.reading


def test_freeing_bytes_while_still_over_resumes_the_longest_waiting_first() -> None:
    budget = InputBudget(1000)
    a, b, c = FakeReader(), FakeReader(), FakeReader()
    budget.update(a, 900)
    budget.update(b, 300)
    budget.update(c, 300)
    assert not b.reading and not c.reading
    budget.update(a, 800)  # 1400 used: still over, one reader resumes
    assert b.reading and not c.reading


def test_a_closed_connection_releases_its_bytes() -> None:
    budget = InputBudget(1000)
    a, b = FakeReader(), FakeReader()
    budget.update(a, 800)
    budget.update(b, 800)
    assert not b.reading
    budget.forget(a)
    assert b.reading and budget.used == 800


def test_zero_disables_the_budget() -> None:
    budget = InputBudget(0)
    a, b = FakeReader(), FakeReader()
    budget.update(a, 10**9)
    budget.update(b, 10**9)
    assert a.reading and b.reading
