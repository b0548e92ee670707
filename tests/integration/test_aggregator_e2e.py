"""The whole path on 127.0.0.1: three real probes, a real broker, the real aggregator.

The demo target answers per region (it reads the X-Vigil-Region header every probe sends),
so one region's view can fail alone.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiomqtt
import pytest

from tests.integration.conftest import INTERVAL, REGIONS, System
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration


async def test_one_region_failing_is_only_degraded(system: System) -> None:
    """One region's view failing gives `degraded`, never `down`."""
    await system.break_target("fail", region="eu-west")
    target = await system.wait_verdict("degraded")
    failing = [r["region"] for r in target["regions"] if r["failing"]]
    assert failing == ["eu-west"]
    region = next(r for r in target["regions"] if r["region"] == "eu-west")
    assert region["last_result"]["error_kind"] == "http_status"
    assert "database connection failed" in region["last_result"]["error"]
    # Many more intervals pass; it must stay degraded.
    settle = time.monotonic() + 10 * INTERVAL
    while time.monotonic() < settle:
        await system.poll()
        await asyncio.sleep(0.1)
    assert "down" not in system.verdicts


async def test_outage_goes_down_then_recovers(system: System) -> None:
    """All regions failing is `down` only once each has N failures; K successes bring `up`."""
    await system.break_target("fail")
    target = await system.wait_verdict("down", limit=3 * INTERVAL + 10)
    assert not target["quorum_degraded"]
    assert sorted(target["quorum"]["failing"]) == sorted(REGIONS)
    # Not before the rule allows it: every region had its 3 consecutive failures.
    assert all(r["consecutive_failures"] >= 3 for r in target["regions"])
    await system.break_target("ok")
    target = await system.wait_verdict("up", limit=2 * INTERVAL + 10)
    assert all(r["consecutive_successes"] >= 2 for r in target["regions"])


async def test_killed_probe_during_outage_gives_degraded_quorum(system: System) -> None:
    """With one probe dead mid-outage the target is still `down`, on a degraded quorum."""
    await system.break_target("fail")
    await system.wait_verdict("down")
    system.probes["ap-southeast"].stop(signal.SIGKILL)

    async def degraded_quorum() -> bool:
        status = await system.poll()
        t = status["targets"][0]
        return bool(t["verdict"] == "down" and t["quorum_degraded"])

    await wait_until_async(degraded_quorum, 20, what="down on a degraded quorum")
    target = system.status["targets"][0]
    stale = next(r for r in target["regions"] if r["region"] == "ap-southeast")
    assert stale["stale"]
    # Its last will (after the keepalive) or its silence, whichever the aggregator saw first.
    assert stale["stale_reason"] == "probe offline" or stale["stale_reason"].startswith(
        "no result for"
    )
    assert set(system.verdicts[system.verdicts.index("down") :]) == {"down"}


async def test_aggregator_restart_during_outage_does_not_flap(system: System) -> None:
    """Restarting the aggregator mid-outage keeps `down` with the same since, no transition."""
    await system.break_target("fail")
    before = await system.wait_verdict("down")
    assert system.aggregator is not None
    assert system.aggregator.stop() == 0
    system.start_aggregator()
    restarted = system.aggregator
    await wait_until(lambda: restarted.events("state_loaded"), limit=15, what="state loaded")
    after = await system.wait_verdict("down", limit=5)
    assert after["since"] == before["since"]
    assert not [t for t in restarted.events("transition") if t["kind"] == "verdict"]
    loaded = restarted.events("state_loaded")[0]
    assert loaded["after_s"] < 10 * INTERVAL + 3  # rebuilt without waiting out the grace


async def test_hostile_publisher_is_counted_and_harmless(system: System) -> None:
    """Garbage on Vigil's topics is rejected and counted; verdicts keep flowing."""
    async with aiomqtt.Client("127.0.0.1", system.broker.port) as evil:
        for i in range(200):
            await evil.publish("vigil/v1/results/us-east/api", b"\x00garbage" * (i % 7), qos=1)
            await evil.publish("vigil/v1/results/mars/api", b"{}", qos=1)
            await evil.publish("vigil/v1/results/us-east/api", b"x" * 70_000, qos=1)

    async def all_rejected() -> bool:
        return await system.metric("vigil_results_rejected_total") >= 600

    await wait_until_async(all_rejected, 15, what="600 rejections counted")
    async with system.session.get(f"http://127.0.0.1:{system.port}/healthz") as resp:
        assert resp.status == 200
    await system.break_target("fail")
    await system.wait_verdict("down")
