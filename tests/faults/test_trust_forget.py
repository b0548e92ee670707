"""A target forgotten after silence stays forgotten across an aggregator restart.

Its probes' last results stay retained at the broker; without the aggregator's retained
tombstone a restarted aggregator took them back and the target returned (50 -> 0 -> 50).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.conftest import Broker, running_system
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration


async def test_a_forgotten_target_does_not_come_back_after_a_restart(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """Probes stop, the target is forgotten, the aggregator restarts: still no target."""
    # A retained result within max_clock_skew of now is never set aside (it may be live):
    # here the restart follows the forget by seconds, so the tolerance is made short.
    async with running_system(
        broker, demo_target, tmp_path, forget_after="3s", max_clock_skew="1s"
    ) as s:
        for proc in s.probes.values():
            proc.stop()

        async def forgotten() -> bool:
            status = await s.poll()
            return status["ready"] and not status["targets"]

        await wait_until_async(forgotten, 30, what="the silent target forgotten")
        assert s.aggregator is not None
        assert s.aggregator.stop() == 0
        s.start_aggregator()

        async def ready() -> bool:
            return bool((await s.poll())["ready"])

        await wait_until_async(ready, 30, what="the restarted aggregator ready")
        # The target is not back, now or a few ticks later...
        for _ in range(3):
            assert (await s.poll())["targets"] == []
            await asyncio.sleep(1)
        # ...because its retained results were delivered and set aside as old news.
        assert await s.metric('vigil_results_ignored_total{reason="forgotten"}') >= 1
