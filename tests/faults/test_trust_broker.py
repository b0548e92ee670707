"""The broker goes away in the middle of an outage, and comes back: the page must hold.

Mosquitto stopped with SIGTERM publishes every probe's last will as it goes; kill -9 sends
nothing and leaves the aggregator cut off. Neither is news about the target.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Serve
from tests.faults.trustkit import describe, parse_time, trial
from tests.integration.conftest import REGIONS, Broker
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

# The aggregator's default_interval here, which sets its hold after a reconnect: the probes'
# reconnect cap (30 s) plus two default intervals, during which nothing goes stale.
DEFAULT_INTERVAL = 1.0
HOLD = 30.0 + 2 * DEFAULT_INTERVAL


@pytest.mark.parametrize(
    ("sig", "down_for"),
    [(signal.SIGTERM, 0.0), (signal.SIGKILL, 20.0)],
    ids=["term-restart", "kill9-down-20s"],
)
async def test_broker_loss_mid_outage_keeps_service_down_firing_and_raises_nothing_else(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve, sig: int, down_for: float
) -> None:
    """A broker lost mid-outage leaves ServiceDown firing with its startsAt and raises nothing."""
    extra = {"default_interval": f"{DEFAULT_INTERVAL:g}s"}
    async with trial(broker, demo_target, tmp_path, serve, aggregator=extra) as t:
        s = t.system
        await s.break_target("fail")
        await s.wait_verdict("down")
        first = await t.wait_listed("ServiceDown")
        posted_first = await t.wait_posted("ServiceDown")

        cut_at = time.time()
        s.broker.stop(sig)

        async def cut_off() -> bool:
            return await t.metric("vigil_broker_connected") == 0

        await wait_until_async(cut_off, 20, what="the aggregator to lose the broker")
        await asyncio.sleep(down_for)  # the broker stays down this long: a fixed fault window
        restarted_at = time.time()
        s.broker.start()  # same port, same persistence directory

        async def reconnected() -> bool:
            return await t.metric("vigil_broker_connected") == 1

        await wait_until_async(reconnected, 30, what="the aggregator back on the broker")
        back_at = time.time()

        async def fresh_from_every_region() -> bool:
            status = await s.poll()
            regions = status["targets"][0]["regions"]
            return len(regions) == len(REGIONS) and all(
                r["last_result"] is not None and r["last_result"]["started_at"] > restarted_at
                for r in regions
            )

        await wait_until_async(fresh_from_every_region, 30, what="results made after the restart")
        if sig == signal.SIGTERM:
            # On past the aggregator's hold, when the last wills the broker sent as it stopped
            # could still count: nothing may move when the hold ends.
            await asyncio.sleep(max(0.0, back_at + HOLD + 4.0 - time.time()))
        else:
            await asyncio.sleep(5.0)  # a few resends with every probe back
        end = time.time()

        during = t.tap.since(cut_at)
        service_down = t.tap.named("ServiceDown")
        resolved = [p for p in service_down if p.resolved]
        starts = {p.starts_at for p in service_down}
        assert not resolved, (
            f"ServiceDown resolved {len(resolved)}x, {len(starts)} startsAt",
            describe(service_down),
        )
        assert starts == {posted_first.starts_at}, describe(service_down)
        others = [p for p in during if p.name != "ServiceDown"]
        assert not others, ("alerts posted during the broker's absence", describe(others))
        assert all(p.status == 200 for p in during), describe(during)

        # What Alertmanager itself listed: ServiceDown in every poll, always with one startsAt.
        polls = t.watch.between(cut_at, end)
        assert len(polls) >= (end - cut_at) / 1.0, f"only {len(polls)} polls of Alertmanager"
        for at, alerts in polls:
            names = sorted(a.name for a in alerts)
            assert names == ["ServiceDown"], f"Alertmanager listed {names} at {at:.1f}"
            assert alerts[0].starts_at == first.starts_at, (at, alerts[0], first)
        assert abs(parse_time(first.starts_at) - parse_time(posted_first.starts_at)) < 0.01

        target = await s.wait_verdict("down", limit=5)
        assert sorted(target["quorum"]["failing"]) == sorted(REGIONS)
        aggregator = s.aggregator
        assert aggregator is not None
        assert aggregator.proc.poll() is None
        assert len(aggregator.events("mqtt_subscribed")) >= 2
