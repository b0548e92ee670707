"""The scheduler on a real event loop: fixed rate, no overlap, a global cap, late checks skipped.

Everything is observed through the scheduler's own callbacks (`run_check`, `on_skip`); bounds
are generous and waits poll, so a loaded machine makes the tests slower, not red.
"""

from __future__ import annotations

import asyncio
import itertools
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


async def test_starts_are_shed_while_the_loop_wakes_them_late() -> None:
    """More checks than the loop can run: starts are shed as `overload`; when it ends, none."""
    busy = 0.01
    ran = 0

    async def check(_t: TargetConfig, _at: float) -> None:
        nonlocal ran
        ran += 1
        time.sleep(busy)  # noqa: ASYNC251 - CPU work holding the loop, as an overload does

    skips = Skips()
    # 200 checks a second offered, 100 a second of loop time: timers fire later and later.
    s = Scheduler(targets(200, 1.0), check, max_in_flight=1000, on_skip=skips)
    s.start()
    await wait_for(lambda: skips.by_reason["overload"] >= 50, what="overload skips")
    assert ran > 0
    busy = 0.0
    # The loop is on time again; the average forgets within seconds: shedding stops.
    seen = [skips.by_reason["overload"], time.monotonic()]

    def settled() -> bool:
        if skips.by_reason["overload"] != seen[0]:
            seen[:] = [skips.by_reason["overload"], time.monotonic()]
        return time.monotonic() - seen[1] >= 1.5

    await wait_for(settled, limit=20, what="shedding to stop")
    ran_before = ran
    await wait_for(lambda: ran - ran_before >= 200, limit=30, what="checks running again")
    await s.stop(grace=1)


async def test_checks_hanging_on_a_dead_target_are_not_overload() -> None:
    """Slots held by checks waiting out their timeout are an outage, not load to shed.

    Every target keeps being checked (or skipped as late); none is shed as overload.
    """
    started: Counter[str] = Counter()

    async def check(t: TargetConfig, _at: float) -> None:
        started[t.name] += 1
        await asyncio.sleep(0.5)  # hangs until its timeout

    skips = Skips()
    # 100 targets at 2 s (50 starts a second), every check hanging 0.5 s, 20 slots (40 a
    # second): starts wait for a slot from a little to most of an interval.
    s = Scheduler(targets(100, 2.0), check, max_in_flight=20, on_skip=skips)
    s.start()
    await wait_for(lambda: sum(started.values()) >= 200, limit=30, what="checks")
    await s.stop(grace=1)
    assert skips.by_reason["overload"] == 0
    assert len(started) == 100


async def test_a_stall_of_the_loop_starves_no_target() -> None:
    """After the loop freezes (a VM pause), no target waits more than about two intervals."""
    starts: dict[str, list[float]] = {}

    async def check(t: TargetConfig, _at: float) -> None:
        starts.setdefault(t.name, []).append(time.monotonic())

    skips = Skips()
    s = Scheduler(targets(20, 2.0), check, max_in_flight=20, on_skip=skips)
    s.start()
    await wait_for(lambda: len(starts) == 20, what="every target checked")
    time.sleep(1.9)  # noqa: ASYNC251 - the loop frozen, as by SIGSTOP or a paused VM
    resumed = time.monotonic()
    await asyncio.sleep(10.0)
    await s.stop(grace=1)
    for name, times in starts.items():
        after = [resumed, *(t for t in times if t >= resumed)]
        gaps = [b - a for a, b in itertools.pairwise(after)]
        # An interval is 2 s; the aggregator's staleness would be 6 s.
        assert len(after) > 2, f"{name} hardly checked after the stall: {gaps}"
        assert max(gaps) < 6.0, (name, gaps)


async def test_a_failing_callback_costs_one_slot_never_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in what a slot calls (here `on_skip`) is logged; the target keeps its timer."""
    checks = 0
    raised = 0

    async def check(_target: TargetConfig, _at: float) -> None:
        nonlocal checks
        checks += 1
        await asyncio.sleep(0.08)  # overruns the next slot

    def on_skip(_target: str, _reason: str) -> None:
        nonlocal raised
        raised += 1
        raise RuntimeError("metrics broke")

    s = Scheduler(targets(1, 0.05), check, max_in_flight=10, on_skip=on_skip)
    s.start()
    await wait_for(lambda: raised >= 3 and checks >= 3, what="checks after the callback failed")
    await s.stop(grace=1)
    assert "schedule_failed" in caplog.text
