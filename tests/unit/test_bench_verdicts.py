"""How `make bench` judges a target (bench/__main__.py, `Paired`): rounds are paired by
the round they were measured in, the estimate is the geometric mean of their ratios,
and the interval says whether the run could tell."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

# bench/ is a tool of the repository, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.__main__ import (
    FLOOR,
    HELD_PHASES,
    TYPED,
    UVLOOP_TARGET,
    Paired,
    fanin_table,
    held_table,
    table,
)


def samples(figures: list[float], key: str = "rate") -> list[dict[str, Any]]:
    return [{key: x, "round": i} for i, x in enumerate(figures, 1)]


def test_the_estimate_is_the_geometric_mean_of_the_rounds_ratios() -> None:
    # A logged run (fan-in N = 200, uvloop): pymprpc slow in three rounds, the floor in one.
    a = samples([41_371, 40_334, 62_584, 42_557, 63_990])
    b = samples([48_825, 68_447, 67_325, 64_270, 72_370])
    p = Paired.of(a, b)
    ratios = [x["rate"] / y["rate"] for x, y in zip(a, b, strict=True)]
    assert p.estimate == pytest.approx(math.prod(ratios) ** (1 / 5))
    assert p.estimate == pytest.approx(0.7706, abs=1e-4)
    assert p.of_medians == pytest.approx(42_557 / 67_325)
    assert p.rounds == 5
    assert p.low < p.estimate < p.high
    assert not p.meets(0.8)


def test_the_interval_is_students_t_on_the_logs() -> None:
    p = Paired.of(samples([2.0, 4.0]), samples([2.0, 2.0]))  # ratios 1 and 2
    half = 6.314 * (math.log(2) / math.sqrt(2)) / math.sqrt(2)
    assert p.estimate == pytest.approx(math.sqrt(2))
    assert math.log(p.high / p.estimate) == pytest.approx(half)
    assert math.log(p.estimate / p.low) == pytest.approx(half)


def test_a_ratio_and_its_inverse_are_judged_alike() -> None:
    rng = random.Random(7)
    a = samples([rng.uniform(50, 150) for _ in range(7)])
    b = samples([rng.uniform(50, 150) for _ in range(7)])
    ab, ba = Paired.of(a, b), Paired.of(b, a)
    assert ab.estimate * ba.estimate == pytest.approx(1.0)
    assert ab.low * ba.high == pytest.approx(1.0)
    for target in (ab.estimate * 1.01, ab.estimate * 0.99):
        assert ab.meets(target) is ba.meets(1 / target, at_most=True)


def test_rounds_pair_by_their_number_not_their_place() -> None:
    # The estimate is the ratio of the two geometric means whatever the pairing; the
    # pairing shows in the interval: every round's ratio is exactly 2, so it has no width.
    a = samples([100.0, 200.0, 300.0])
    b = samples([50.0, 100.0, 150.0])
    p = Paired.of(a, list(reversed(b)))
    assert p.estimate == pytest.approx(2.0)
    assert p.low == pytest.approx(2.0) and p.high == pytest.approx(2.0)


def test_a_cost_is_judged_from_the_other_side() -> None:
    # Lower is better (p99, CPU per call): "clear" only when the whole interval is under.
    p = Paired.of(samples([1.20, 1.22, 1.21, 1.19]), samples([1.0] * 4), "rate")
    assert p.meets(1.3, at_most=True) and ": clear;" in p.note(1.3, at_most=True)
    assert not p.meets(1.1, at_most=True) and ": clearly short;" in p.note(1.1, at_most=True)
    assert ": within noise;" in p.note(1.2, at_most=True)


def test_one_round_gives_no_interval() -> None:
    p = Paired.of(samples([1.25]), samples([1.0]))
    assert p.note(1.0) == " [1 round: no interval; ratio of medians 1.25]"


def test_an_unpaired_round_or_a_figure_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="unpaired rounds"):
        Paired.of(samples([1.0, 2.0, 3.0]), samples([1.0, 2.0]))
    with pytest.raises(ValueError, match="not positive"):
        Paired.of(samples([1.0, 0.0]), samples([1.0, 2.0]))


@pytest.mark.parametrize(
    ("figures", "where"),
    [
        ([1.10, 1.12, 1.09, 1.11, 1.10], "clear"),
        ([0.80, 1.25, 0.95, 1.20, 0.90], "within noise"),
        ([0.90, 0.91, 0.89, 0.92, 0.90], "clearly short"),
    ],
)
def test_the_note_says_whether_the_run_could_tell(figures: list[float], where: str) -> None:
    p = Paired.of(samples(figures), samples([1.0] * len(figures)))
    assert f": {where};" in p.note(1.0)


def test_a_verdict_judges_paired_rounds_not_the_ratio_of_medians() -> None:
    # uvloop's median equals asyncio's, but round by round it is slower in four of five:
    # the ratio of medians (1.00) would pass the target, the paired estimate does not.
    asyncio_rates = [100.0, 120.0, 80.0, 110.0, 90.0]
    uvloop_rates = [101.0, 110.0, 75.0, 100.0, 85.0]
    results = {
        ("w3", "pymprpc"): samples(asyncio_rates),
        ("w3", "pymprpc + uvloop"): samples(uvloop_rates),
    }
    _, verdicts = table(results)
    line = next(v for v in verdicts if v.startswith("w3: uvloop"))
    estimate = Paired.of(results["w3", "pymprpc + uvloop"], results["w3", "pymprpc"]).estimate
    assert estimate < UVLOOP_TARGET
    assert f"at {estimate:.2f}x" in line and "NOT met" in line
    assert "ratio of medians 1.00;" in line


def test_typed_and_fan_in_verdicts_use_the_same_rule() -> None:
    results = {
        ("w1", "pymprpc"): samples([100.0, 100.0, 100.0]),
        ("w1", TYPED): samples([96.0, 97.0, 96.0]),
    }
    _, verdicts = table(results)
    assert any(v.startswith("w1: typed at 0.96x") and "met [" in v for v in verdicts)

    def fan(rate: float, p99: float, server: float, client: float) -> dict[str, Any]:
        return {"rate": rate, "p99_us": p99, "server_us": server, "client_us": client}

    ours = [fan(80, 10, 13, 13) | {"round": r} for r in (1, 2, 3)]
    floor = [fan(100, 8, 10, 10) | {"round": r} for r in (1, 2, 3)]
    _, fan_verdicts = fanin_table({("pymprpc", 200, False): ours, (FLOOR, 200, False): floor})
    (line,) = fan_verdicts
    assert "calls/s 0.80x" in line and "client CPU/call 1.30x" in line
    assert line.endswith(": met")
    ours[1]["client_us"] = 20  # one round's client far costlier: the mean of logs moves
    _, fan_verdicts = fanin_table({("pymprpc", 200, False): ours, (FLOOR, 200, False): floor})
    assert fan_verdicts[0].endswith(": NOT met")


def test_the_10k_held_verdict_pairs_each_rounds_two_phases() -> None:
    def phase(p99: float) -> dict[str, float]:
        return {
            "rate": 100.0,
            "p50_us": 1.0,
            "p99_us": p99,
            "server_us": 1.0,
            "client_us": 1.0,
            "server_longest_gc_ms": 0.0,
            "client_longest_gc_ms": 0.0,
        }

    def round_(n: int, base: float, held: float) -> dict[str, Any]:
        phases: dict[str, Any] = {name: phase(base) for name in HELD_PHASES}
        phases["open_held"] = phase(held)
        return phases | {"round": n, "offered": 100.0, "server_kib_per_conn": 3.0}

    # Held against its own round's base: 1.9x, 2.0x and 1.2x, so the geometric mean is
    # 1.66x; the held phase's median (1,600) over the base phase's (800) is 2.00x.
    rounds = [round_(1, 1000, 1900), round_(2, 800, 1600), round_(3, 500, 600)]
    _, verdicts = held_table(rounds)
    assert "p99 1.66x" in verdicts[0] and "(target <= 2x): met [" in verdicts[0]
    assert "ratio of medians 2.00; 3 rounds" in verdicts[0]
    rounds[1] = round_(2, 800, 4000)  # one round 5x: the mean of the logs is past 2x
    _, verdicts = held_table(rounds)
    assert "(target <= 2x): NOT met [" in verdicts[0]
