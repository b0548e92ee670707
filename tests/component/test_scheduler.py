"""The scheduler on a real event loop: fixed rate, no overlap, a global cap, late checks skipped.

Everything is observed through the scheduler's own callbacks (`run_check`, `on_skip`); bounds
are generous and waits poll, so a loaded machine makes the tests slower, not red.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import pytest

from probe.config import TargetConfig
from probe.schedule import Scheduler
from tests.polling import wait_until as wait_for


def targets(n: int, interval: float) -> list[TargetConfig]:
    return [
        TargetConfig(name=f"t{i}", url="http://x", interval=interval, timeout=interval / 2)
        for i in range(n)
    ]


class Skips:
    """Counts `on_skip` calls by target and by reason."""

    def __init__(self) -> None:
        self.by_target = Counter[str]()
        self.by_reason = Counter[str]()

    def __call__(self, target: str, reason: str) -> None:
        self.by_target[target] += 1
        self.by_reason[reason] += 1


@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["idle", "stalled-loop"])
async def test_each_target_runs_on_a_fixed_grid_without_drift(stall: float) -> None:
    """Slot k of a target is due k intervals after its first; none starts early or goes missing."""
    interval = 0.05
    runs: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)

    async def check(target: TargetConfig, scheduled_at: float) -> None:
        runs[target.name].append((scheduled_at, time.monotonic()))
        if stall and target.name == "t0" and len(runs["t0"]) == 5:
            # Block the whole event loop for several intervals, as a loaded machine would.
            until = time.monotonic() + stall
            while time.monotonic() < until:
                pass

    skips = Skips()
    # Scheduled times on the monotonic clock, so they compare with when checks really ran.
    s = Scheduler(
        targets(3, interval), check, max_in_flight=10, on_skip=skips, wall_clock=time.monotonic
    )
    s.start()
    await wait_for(
        lambda: len(runs) == 3 and min(len(r) for r in runs.values()) >= 20,
        limit=60,
        what="20 checks of each target",
    )
    await s.stop(grace=1)
    for name, seen in runs.items():
        first = seen[0][0]
        slots = [(at - first) / interval for at, _ in seen]
        # Computed from the first slot, never from when the loop woke: on the grid to the float.
        assert all(abs(k - round(k)) < 1e-6 for k in slots), name
        ks = [round(k) for k in slots]
        assert ks == sorted(set(ks)), name  # each slot once, in order
        assert all(started >= at - 1e-3 for at, started in seen), name  # never early
        assert all(started - at < 1.0 for at, started in seen), name
        # Every slot from the first to the last either ran or was reported skipped.
        assert len(seen) + skips.by_target[name] >= ks[-1] + 1, name
    if stall:
        assert skips.by_reason["late"] > 0  # the stalled slots were skipped, not bunched up


async def test_a_slow_check_is_never_doubled() -> None:
    """While a target's check runs, its next slots are overruns, not a second check."""
    running = Counter[str]()
    most = 0

    async def check(target: TargetConfig, _at: float) -> None:
        nonlocal most
        running[target.name] += 1
        most = max(most, running[target.name])
        await asyncio.sleep(0.2)
        running[target.name] -= 1

    skips = Skips()
    s = Scheduler(targets(1, 0.05), check, max_in_flight=10, on_skip=skips)
    s.start()
    await wait_for(lambda: skips.by_reason["overrun"] >= 3, what="three overruns")
    await s.stop(grace=1)
    assert most == 1


async def test_in_flight_cap_holds() -> None:
    """No more checks run at once than max_in_flight, across targets."""
    active = 0
    most = 0
    started = 0

    async def check(_t: TargetConfig, _at: float) -> None:
        nonlocal active, most, started
        started += 1
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.02)
        active -= 1

    s = Scheduler(targets(30, 0.1), check, max_in_flight=4)
    s.start()
    await wait_for(lambda: started >= 60, what="60 checks")
    await s.stop(grace=1)
    assert most == 4


async def test_checks_that_would_start_an_interval_late_are_skipped() -> None:
    """When the cap makes a check wait longer than its interval it is skipped and reported."""

    async def check(_t: TargetConfig, _at: float) -> None:
        await asyncio.sleep(0.3)

    skips = Skips()
    s = Scheduler(targets(5, 0.1), check, max_in_flight=1, on_skip=skips)
    s.start()
    await wait_for(lambda: skips.by_reason["late"] >= 3, what="three late skips")
    await s.stop(grace=1)


async def test_stop_waits_for_checks_in_flight() -> None:
    """stop() lets a running check finish within the grace period."""
    started: list[str] = []
    finished: list[str] = []

    async def check(target: TargetConfig, _at: float) -> None:
        started.append(target.name)
        await asyncio.sleep(0.1)
        finished.append(target.name)

    s = Scheduler(targets(1, 0.05), check, max_in_flight=1)
    s.start()
    await wait_for(lambda: started, what="a check")
    await s.stop(grace=2)
    assert finished == ["t0"]


async def test_starts_are_shed_while_checks_run_late_on_average() -> None:
    """More checks than the cap lets run: starts are shed as `overload`; when it ends, none."""
    slow = 0.2
    ran = 0

    async def check(_t: TargetConfig, _at: float) -> None:
        nonlocal ran
        ran += 1
        await asyncio.sleep(slow)

    skips = Skips()
    # 200 checks a second offered, 50 a second possible: starts wait for a slot, later and later.
    s = Scheduler(targets(200, 1.0), check, max_in_flight=10, on_skip=skips)
    s.start()
    await wait_for(lambda: skips.by_reason["overload"] >= 50, what="overload skips")
    assert ran > 0
    slow = 0.0
    await asyncio.sleep(1.0)  # what waited has run or been shed; starts are on time again
    shed, ran_before = skips.by_reason["overload"], ran
    await wait_for(lambda: ran - ran_before >= 200, limit=30, what="checks running again")
    await s.stop(grace=1)
    assert skips.by_reason["overload"] - shed < 20
