"""Fast confirm: after a failed check the probe re-checks soon instead of a whole interval later."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from probe.config import TargetConfig
from probe.schedule import Scheduler
from tests.polling import wait_until

INTERVAL = 1.0
RETRY = 0.1


def target(**kw: object) -> TargetConfig:
    doc: dict[str, object] = {
        "name": "api",
        "url": "http://x",
        "interval": INTERVAL,
        "timeout": 0.2,
        "retry_interval": RETRY,
        "confirm_retries": 2,
        **kw,
    }
    return TargetConfig.model_validate(doc)


async def checks_in_first_two_slots(config: TargetConfig, outcomes: list[bool]) -> list[float]:
    """Scheduled times of every check until the second regular slot; `outcomes` say which fail."""
    runs: list[float] = []

    async def check(_t: TargetConfig, scheduled_at: float) -> bool:
        failed = outcomes[len(runs)] if len(runs) < len(outcomes) else False
        runs.append(scheduled_at)
        return failed

    s = Scheduler([config], check, max_in_flight=4, wall_clock=time.monotonic)
    s.start()
    await wait_until(
        lambda: runs and runs[-1] >= runs[0] + INTERVAL - 1e-6, limit=20, what="slot 2"
    )
    await s.stop(grace=1.0)
    return runs


@pytest.mark.parametrize(
    ("outcomes", "within_first_interval"),
    [
        pytest.param([True, True, True], 3, id="fails: two quick re-checks"),
        pytest.param([True, False], 2, id="passes on the first re-check: stop"),
        pytest.param([False], 1, id="passes: no re-check"),
    ],
)
async def test_a_failure_is_confirmed_quickly(
    outcomes: list[bool], within_first_interval: int
) -> None:
    """A failed check is re-run after retry_interval until it passes or confirm_retries ran."""
    runs = await checks_in_first_two_slots(target(), outcomes)
    first = runs[0]
    early = [t for t in runs if t < first + INTERVAL - 1e-6]
    assert len(early) == within_first_interval
    gaps = [b - a for a, b in itertools.pairwise(early)]
    assert all(RETRY - 1e-6 <= g < INTERVAL / 2 for g in gaps)  # soon, never before retry
    # The fixed-rate grid is kept: the next regular check is exactly one interval on.
    assert runs[len(early)] == pytest.approx(first + INTERVAL)


async def test_confirming_can_be_turned_off() -> None:
    """With retry_interval null a failed check waits for its next regular slot."""
    runs = await checks_in_first_two_slots(target(retry_interval=None), [True, True, True])
    assert runs[1] == pytest.approx(runs[0] + INTERVAL)


async def test_a_hung_target_is_still_confirmed_and_never_checked_twice_at_once() -> None:
    """Re-checks that take their whole timeout run anyway; a slot they overlap is skipped."""
    config = target(timeout=0.45)
    running = 0
    overlapped = False
    runs: list[float] = []
    skipped: list[str] = []

    async def hung(_t: TargetConfig, scheduled_at: float) -> bool:
        nonlocal running, overlapped
        running += 1
        overlapped = overlapped or running > 1
        runs.append(scheduled_at)
        await asyncio.sleep(0.45)  # a timeout's worth
        running -= 1
        return True

    s = Scheduler(
        [config],
        hung,
        max_in_flight=4,
        on_skip=lambda _t, reason: skipped.append(reason),
        wall_clock=time.monotonic,
    )
    s.start()
    await wait_until(lambda: len(runs) >= 3, limit=20, what="a check and two re-checks")
    await s.stop(grace=2.0)
    assert not overlapped
    assert runs[1] - runs[0] < INTERVAL  # the first re-check came before the next slot
    assert set(skipped) <= {"confirming"}


async def test_stop_starts_no_more_re_checks() -> None:
    """Once stop() is called a confirming target gets no further re-checks."""
    runs: list[float] = []

    async def failing(_t: TargetConfig, scheduled_at: float) -> bool:
        runs.append(scheduled_at)
        return True

    s = Scheduler([target(retry_interval=0.3)], failing, max_in_flight=4, wall_clock=time.monotonic)
    s.start()
    await wait_until(lambda: len(runs) >= 1, limit=20, what="the first check")
    await s.stop(grace=2.0)
    count = len(runs)
    await asyncio.sleep(0.5)  # longer than retry_interval: a re-check would have started
    assert len(runs) == count
    assert count == 1
