"""The scheduler on a real event loop: no overlap, a global cap, late checks skipped."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

from probe.config import TargetConfig
from probe.schedule import Scheduler
from tests.polling import wait_until as wait_for


def targets(n: int, interval: float) -> list[TargetConfig]:
    return [
        TargetConfig(name=f"t{i}", url="http://x", interval=interval, timeout=interval / 2)
        for i in range(n)
    ]


async def test_runs_every_target_at_its_rate() -> None:
    """Each target is checked repeatedly, with the scheduled time it was due."""
    seen: list[tuple[str, float]] = []

    async def check(target: TargetConfig, scheduled_at: float) -> None:
        seen.append((target.name, scheduled_at))

    s = Scheduler(targets(3, 0.05), check, max_in_flight=10)
    s.start()
    await wait_for(
        lambda: (
            min(Counter(n for n, _ in seen).values(), default=0) >= 4
            and len(Counter(n for n, _ in seen)) == 3
        )
    )
    await s.stop(grace=1)
    times = [t for n, t in seen if n == "t0"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Scheduled times are exact multiples of the interval, whatever the loop's lateness.
    assert all(abs(g - 0.05) < 1e-6 for g in gaps)


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

    skips: list[str] = []
    s = Scheduler(targets(1, 0.05), check, max_in_flight=10, on_skip=lambda _t, r: skips.append(r))
    s.start()
    await wait_for(lambda: s.stats.overruns >= 3)
    await s.stop(grace=1)
    assert most == 1
    assert "overrun" in skips


async def test_in_flight_cap_holds() -> None:
    """No more checks run at once than max_in_flight, across targets."""
    active = 0
    most = 0

    async def check(_t: TargetConfig, _at: float) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.02)
        active -= 1

    s = Scheduler(targets(30, 0.1), check, max_in_flight=4)
    s.start()
    await wait_for(lambda: s.stats.started >= 60)
    await s.stop(grace=1)
    assert most == 4


async def test_checks_that_would_start_an_interval_late_are_skipped() -> None:
    """When the cap makes a check wait longer than its interval it is skipped and counted."""

    async def check(_t: TargetConfig, _at: float) -> None:
        await asyncio.sleep(0.3)

    skips: list[str] = []
    s = Scheduler(targets(5, 0.1), check, max_in_flight=1, on_skip=lambda _t, r: skips.append(r))
    s.start()
    await wait_for(lambda: s.stats.skipped_late >= 3)
    await s.stop(grace=1)
    assert "late" in skips


async def test_stop_waits_for_checks_in_flight() -> None:
    """stop() lets a running check finish within the grace period."""
    finished: list[str] = []

    async def check(target: TargetConfig, _at: float) -> None:
        await asyncio.sleep(0.1)
        finished.append(target.name)

    s = Scheduler(targets(1, 0.05), check, max_in_flight=1)
    s.start()
    await wait_for(lambda: s.stats.started >= 1)
    await s.stop(grace=2)
    assert finished == ["t0"]
