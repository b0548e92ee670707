"""The aggregator restarts in the middle of an outage: the page and its history must hold.

Before results carried their interval, a restarted aggregator replayed the queued backlog
with the 10 s default interval and moved each region's "failing since" back by minutes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Serve
from tests.faults.trustkit import describe, trial
from tests.integration.conftest import REGIONS, Broker
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill9"])
async def test_an_aggregator_restart_mid_outage_keeps_failing_since_and_starts_at(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve, sig: int
) -> None:
    """Each region's failing since and ServiceDown's startsAt survive a restart; no resolve."""
    async with trial(broker, demo_target, tmp_path, serve) as t:
        s = t.system
        await s.break_target("fail")
        await s.wait_verdict("down")
        posted_first = await t.wait_posted("ServiceDown")
        before = {
            r["region"]: r["failing_since"] for r in (await s.poll())["targets"][0]["regions"]
        }
        assert sorted(before) == sorted(REGIONS)
        assert all(since is not None for since in before.values()), before

        assert s.aggregator is not None
        s.aggregator.stop(sig)
        await asyncio.sleep(3.0)  # the outage goes on; the broker queues the results
        restarted_at = time.time()
        s.start_aggregator()

        async def caught_up() -> bool:
            status = await s.poll()
            if not status["ready"] or not status["targets"]:
                return False
            regions = status["targets"][0]["regions"]
            return len(regions) == len(REGIONS) and all(
                r["last_result"] is not None and r["last_result"]["started_at"] > restarted_at
                for r in regions
            )

        await wait_until_async(caught_up, 30, what="results made after the restart")
        target = await s.wait_verdict("down", limit=5)
        after = {r["region"]: r["failing_since"] for r in target["regions"]}
        assert after == before, (before, after)
        await asyncio.sleep(5.0)  # a few resends after the restart

        service_down = t.tap.named("ServiceDown")
        assert not [p for p in service_down if p.resolved], describe(service_down)
        assert {p.starts_at for p in service_down} == {posted_first.starts_at}, describe(
            service_down
        )
        assert len(t.tap.since(restarted_at)) >= 1, "nothing re-sent after the restart"
        others = [p for p in t.tap.posted if p.name != "ServiceDown"]
        assert not others, describe(others)
