"""Floods from one probe's credentials: made-up targets and huge messages stay bounded.

Before: 5,000 bogus target names from one region made 130k series and a 10 MB /metrics;
one presence record under 64 KiB created 5,361 targets; a 100 MiB message was read whole
by the aggregator before its size check (peak +226 MB). The real aggregator, probes,
mosquitto and Alertmanager run here; the flood comes from a plain MQTT client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiomqtt
import pytest

from tests.conftest import Serve
from tests.faults.trustkit import Trial, trial
from tests.integration.conftest import Broker
from tests.polling import wait_until_async
from tests.rulekit import RegionProbe
from wire.result import Presence
from wire.topics import presence_topic, result_topic

pytestmark = pytest.mark.integration

LIMITS = {"max_targets": 40, "max_targets_per_region": 20, "max_series": 600}


def bogus_result(name: str, seq: int) -> bytes:
    result = RegionProbe("us-east", target=name, probe_id="us-east-rogue").check(False, time.time())
    doc = json.loads(result.to_json())
    doc["seq"] = seq
    return json.dumps(doc).encode()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


async def scrape(t: Trial) -> str:
    async with t.system.session.get(f"http://127.0.0.1:{t.system.port}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_made_up_targets_are_capped_and_a_real_outage_still_pages(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """500 names in results and 5,000 in one presence: held to the caps, counted; api pages."""
    async with trial(broker, demo_target, tmp_path, serve, aggregator={"limits": LIMITS}) as t:
        port = t.system.broker.port
        async with aiomqtt.Client("127.0.0.1", port, identifier="rogue") as client:
            for i in range(500):
                await client.publish(
                    result_topic("us-east", f"bogus-{i}"), bogus_result(f"bogus-{i}", i), qos=1
                )
            presence = Presence(
                status="online",
                probe_id="us-east-rogue",
                region="eu-west",
                boot_id="f" * 32,
                at=time.time(),
                targets={f"listed-{i}": 10.0 for i in range(5000)},
            )
            await client.publish(
                presence_topic("eu-west", "us-east-rogue"), presence.to_json(), qos=1
            )

        async def refused() -> bool:
            eu = await t.metric("vigil_targets_refused_total", region="eu-west")
            us = await t.metric("vigil_targets_refused_total", region="us-east")
            return eu > 0 and us >= 500 - LIMITS["max_targets_per_region"]

        await wait_until_async(refused, 30, what="the flood refused and counted")
        held = await t.metric("vigil_targets")
        assert held <= LIMITS["max_targets"]
        # Each region stopped at its share: us-east's 20 (api among them) and eu-west's 20.
        assert held >= LIMITS["max_targets_per_region"]
        status = await t.system.poll()
        assert len(status["targets"]) == held
        assert "api" in {target["target"] for target in status["targets"]}
        assert t.system.aggregator is not None
        assert t.system.aggregator.events("targets_refused")

        text = await scrape(t)
        # api came first, so it keeps its series; the cap bounds the rest.
        assert 'vigil_region_failing{region="us-east",target="api"}' in text
        samples = [line for line in text.splitlines() if 'target="' in line]
        assert len(samples) <= LIMITS["max_series"]
        assert await t.metric("vigil_metrics_targets_omitted") > 0

        await t.system.break_target("fail")
        alert = await t.wait_listed("ServiceDown", target="api")
        assert dict(alert.labels)["target"] == "api"


async def test_a_huge_message_is_never_read_by_the_aggregator(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """A 64 MiB publish: the aggregator (MQTT 5, maximum packet size 1 MiB) never holds it."""
    async with trial(broker, demo_target, tmp_path, serve) as t:
        assert t.system.aggregator is not None
        pid = t.system.aggregator.proc.pid
        before = peak_rss_kib(pid)
        async with aiomqtt.Client("127.0.0.1", t.system.broker.port, identifier="rogue") as c:
            await c.publish(result_topic("us-east", "api"), b"x" * (64 << 20), qos=1)
            # A normal-sized message after it still arrives (rejected as bad JSON, counted).
            await c.publish(result_topic("us-east", "api"), b"y" * 100, qos=1)

        async def small_one_seen() -> bool:
            return await t.metric("vigil_results_rejected_total", reason="invalid_json") >= 1

        await wait_until_async(small_one_seen, 30, what="the small message after the huge one")
        assert await t.metric("vigil_results_rejected_total", reason="too_large") == 0
        grown_mib = (peak_rss_kib(pid) - before) / 1024
        assert grown_mib < 32, f"aggregator peak RSS grew {grown_mib:.0f} MiB"
        assert t.system.aggregator.proc.poll() is None
        status = await t.system.poll()
        assert status["targets"][0]["verdict"] == "up"
