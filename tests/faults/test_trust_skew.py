"""A probe whose wall clock is wrong, run under Debian's libfaketime, during real failures.

Only the probe's wall clock moves (its results' timestamps); its schedule runs on the
monotonic clock, as on a machine whose NTP is off. Every probe checks once a second.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import Serve
from tests.faults.trustkit import Trial, describe, parse_time, trial
from tests.integration.conftest import REGIONS, Broker
from tests.polling import wait_until

pytestmark = pytest.mark.integration

INTERVAL = 1.0
SOAK = 30.0


async def lag(t: Trial, region: str) -> float:
    """How far behind now the region's latest result says it started."""
    status = await t.system.poll()
    [view] = [r for r in status["targets"][0]["regions"] if r["region"] == region]
    return time.time() - float(view["last_result"]["started_at"])


@pytest.mark.parametrize(
    "clocks",
    [
        # Every probe: one alone cannot resolve ServiceDown (a degraded quorum keeps it down).
        dict.fromkeys(REGIONS, "-2.5s"),
        # Ahead, within max_clock_skew (30 s): accepted, and its alert's times clamped.
        {"eu-west": "+25s"},
    ],
    ids=["all-2.5s-behind", "one-25s-ahead"],
)
async def test_skewed_probe_clocks_keep_one_service_down_with_one_starts_at(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve, clocks: dict[str, str]
) -> None:
    """With probe clocks skewed, an outage is one ServiceDown with one startsAt, no more."""
    async with trial(broker, demo_target, tmp_path, serve, interval=INTERVAL, clocks=clocks) as t:
        s = t.system
        for region, shift in clocks.items():
            seconds = float(shift.rstrip("s"))
            # lag() is how far behind the result says it started: the shift, negated.
            assert abs(await lag(t, region) + seconds) < 1.0, f"{region} is not {shift}"

        await s.break_target("fail")
        fired = await t.wait_posted("ServiceDown")
        first = await t.wait_listed("ServiceDown")
        await asyncio.sleep(SOAK)  # the outage goes on: the window under test
        end = time.time()

        down = t.tap.named("ServiceDown")
        resolved = [p for p in down if p.resolved]
        starts = {p.starts_at for p in down}
        assert not resolved, (
            f"ServiceDown resolved {len(resolved)}x, {len(starts)} startsAt",
            describe(down),
        )
        assert {p.starts_at for p in down} == {fired.starts_at}, describe(down)
        offline = t.tap.named("ProbeOffline")
        assert not offline, describe(offline)
        others = [p for p in t.tap.since(fired.at) if p.name != "ServiceDown" and not p.resolved]
        assert not others, describe(others)
        polls = t.watch.between(fired.at + 1.0, end)
        assert len(polls) >= SOAK, f"only {len(polls)} polls of Alertmanager"
        for at, alerts in polls:
            assert [(a.name, a.starts_at) for a in alerts] == [("ServiceDown", first.starts_at)], (
                at,
                alerts,
            )
        assert (await s.wait_verdict("down", limit=5))["quorum_degraded"] is False
        refused = [p for p in t.tap.posted if p.status != 200]
        assert not refused, (describe(refused), t.tap.answers)


async def test_a_probe_clock_ahead_never_gets_an_alert_refused(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """A regional alert from a probe 25 s ahead is accepted by Alertmanager firing and resolved."""
    clocks = {"eu-west": "+25s"}
    async with trial(broker, demo_target, tmp_path, serve, interval=INTERVAL, clocks=clocks) as t:
        s = t.system
        assert await lag(t, "eu-west") < -20, "the eu-west probe's clock is not ahead"

        await s.break_target("fail", region="eu-west")
        fired = await t.wait_posted("ServiceRegionDown", limit=60, region="eu-west")
        assert fired.status == 200, (describe([fired]), t.tap.answers[-3:])
        listed = await t.wait_listed("ServiceRegionDown", limit=10, region="eu-west")
        assert parse_time(listed.starts_at) <= fired.at, "startsAt in the future"

        async with s.session.post(f"{s.demo}/_demo/state", json={"reset": True}) as resp:
            assert resp.status == 200
        await s.wait_verdict("up")
        await wait_until(
            lambda: any(p.resolved for p in t.tap.named("ServiceRegionDown")),
            limit=20,
            what="ServiceRegionDown sent resolved",
        )
        await t.wait_not_listed("ServiceRegionDown")

        refused = [p for p in t.tap.posted if p.status != 200]
        assert not refused, (describe(refused), t.tap.answers)
        assert await t.metric("vigil_alertmanager_posts_total", outcome="rejected") == 0
        assert await t.am_metric("alertmanager_alerts_invalid_total") == 0
        assert await t.metric("vigil_alertmanager_posts_total", outcome="success") > 0
