"""Failures that heal: one regional page for a regional failure, and a quiet recovery.

When a full outage heals, the regions reach their K-th success one by one: those still short
of it are healing from the outage, not failing on their own, and must not page. The
aggregator runs with its defaults, so a regional page waits `region_down_for` (30 s).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import Serve
from tests.faults.trustkit import Posted, Trial, describe, trial
from tests.integration.conftest import Broker
from tests.polling import wait_until

pytestmark = pytest.mark.integration


async def reset(t: Trial) -> None:
    async with t.system.session.post(f"{t.system.demo}/_demo/state", json={"reset": True}) as r:
        assert r.status == 200


def one_life(posted: list[Posted]) -> None:
    """Posts of one alert: one startsAt, firing until it resolves, never firing again after."""
    assert posted, "never posted"
    assert len({p.starts_at for p in posted}) == 1, describe(posted)
    states = [p.resolved for p in posted]
    assert True in states, ("never resolved", describe(posted))
    assert all(states[states.index(True) :]), ("fired again after resolving", describe(posted))


async def test_a_regional_failure_pages_once_and_a_full_outage_heals_without_regional_pages(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """A region's failure fires and resolves one ServiceRegionDown; a healed outage fires none."""
    async with trial(broker, demo_target, tmp_path, serve) as t:
        s = t.system
        regional_at = time.time()
        await s.break_target("fail", region="eu-west")
        await t.wait_listed("ServiceRegionDown", region="eu-west", limit=60)
        await reset(t)
        await s.wait_verdict("up")
        await t.wait_not_listed("ServiceRegionDown")
        await wait_until(
            lambda: any(p.resolved for p in t.tap.named("ServiceRegionDown")),
            limit=20,
            what="ServiceRegionDown sent resolved",
        )

        outage_at = time.time()
        regional = [p for p in t.tap.since(regional_at) if p.at < outage_at]
        assert {p.name for p in regional} == {"ServiceRegionDown"}, describe(regional)
        assert {p.labels["region"] for p in regional} == {"eu-west"}, describe(regional)
        one_life(regional)
        shown = {(a.labels, a.starts_at) for a in t.watch.listed("ServiceRegionDown")}
        assert len(shown) == 1, shown

        await s.break_target("fail")
        fired = await t.wait_posted("ServiceDown")
        await t.wait_listed("ServiceDown")
        await reset(t)
        await s.wait_verdict("up")
        await t.wait_not_listed("ServiceDown")
        await wait_until(
            lambda: any(p.resolved for p in t.tap.named("ServiceDown")),
            limit=20,
            what="ServiceDown sent resolved",
        )
        await asyncio.sleep(3.0)  # every region back to K successes, with time to page

        down = t.tap.named("ServiceDown")
        one_life(down)
        # Out of the outage and into it: no region pages on its own (the regional alert of
        # the first part is still re-sent as resolved, which pages nobody).
        pages = [p for p in t.tap.named("ServiceRegionDown", since=outage_at) if not p.resolved]
        healing = [p for p in pages if p.at >= fired.at]
        assert not healing, ("regional pages once ServiceDown fired", describe(healing))
        assert not pages, ("regional pages on the way into the outage", describe(pages))
        assert not t.watch.listed("ServiceRegionDown", since=outage_at)
        assert not t.tap.named("ProbeOffline"), describe(t.tap.named("ProbeOffline"))
        assert all(p.status == 200 for p in t.tap.posted), describe(t.tap.posted)
