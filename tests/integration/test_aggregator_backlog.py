"""A backlog queued for the aggregator's persistent session arrives whole after a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from demo.local import free_port, wait_port
from tests.integration.conftest import Broker, aggregator_config, start_aggregator
from tests.polling import wait_until, wait_until_async
from tests.rulekit import RegionProbe
from wire.topics import result_topic

pytestmark = pytest.mark.integration

TARGETS = 500
PER_TARGET = 40  # 20,000 results in the backlog


async def metric(session: aiohttp.ClientSession, port: int, prefix: str) -> float:
    """The sum of every sample whose line starts with `prefix`."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


async def test_backlog_with_a_slow_suback_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    """A 20,000-result backlog is applied whole, though each SUBACK outlasts the timeout."""
    port = free_port()
    # A subscribe timeout far below the time the backlog takes, to force the slow-SUBACK path.
    config = aggregator_config(
        tmp_path / "agg.yaml", broker, port, subscribe_timeout="100ms", startup_grace="20s"
    )
    first = start_aggregator(config, tmp_path / "agg-1.log")
    wait_port(port)
    await wait_until(lambda: first.events("mqtt_subscribed"), limit=15, what="first subscription")
    assert first.stop() == 0

    probes = [RegionProbe("us-east", target=f"t{i}") for i in range(TARGETS)]
    # Recent stamps: results older than max_result_age would be rejected, not applied.
    start = time.time() - PER_TARGET
    async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=1000) as pub:
        pub.pending_calls_threshold = 10 * TARGETS  # batches of TARGETS are expected here
        for round_ in range(PER_TARGET):
            batch = [
                pub.publish(
                    result_topic("us-east", p.target),
                    p.check(round_ % 5 != 0, start + round_).to_json(),
                    qos=1,
                )
                for p in probes
            ]
            await asyncio.gather(*batch)

    second = start_aggregator(config, tmp_path / "agg-2.log")
    wait_port(port)
    async with aiohttp.ClientSession() as session:

        async def drained() -> bool:
            got = await metric(session, port, 'vigil_results_received_total{region="us-east"}')
            return got >= TARGETS * PER_TARGET

        await wait_until_async(drained, limit=60, what="the whole backlog")

        async def ready() -> bool:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status == 200

        await wait_until_async(ready, limit=30, what="readiness")
        # The largest page holds every target: this asks for all of them at once.
        params = {"limit": "1000"}
        async with session.get(f"http://127.0.0.1:{port}/api/v1/status", params=params) as resp:
            status = await resp.json()
        assert status["next_cursor"] is None
        # Every queued result applied exactly once: redelivered retained copies are ignored.
        applied = await metric(session, port, "vigil_probe_results_total{")
        assert applied == TARGETS * PER_TARGET
    assert second.stop() == 0
    assert second.events("mqtt_subscribe_slow"), "the slow-SUBACK path was not exercised"
    assert len(status["targets"]) == TARGETS
    for target in status["targets"]:
        [view] = [r for r in target["regions"] if r["region"] == "us-east"]
        # The latest of each target's 40 results is the one applied last.
        assert view["last_result"]["started_at"] == start + PER_TARGET - 1
