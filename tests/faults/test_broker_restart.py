"""The broker or the aggregator goes away under a running system, and comes back.

Real mosquitto with persistence, real probe and aggregator processes; the aggregator keeps a
persistent session (a fixed client_id), so the broker queues results for it while it is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from tests.integration.conftest import REGIONS, System
from tests.polling import wait_until, wait_until_async
from wire.result import ProbeResult
from wire.topics import RESULTS_FILTER

pytestmark = pytest.mark.integration


async def readyz(system: System) -> tuple[int, dict[str, Any]]:
    async with system.session.get(f"http://127.0.0.1:{system.port}/readyz") as resp:
        return resp.status, dict(await resp.json())


async def test_broker_restart_reconnects_resumes_and_detects_a_later_outage(
    system: System,
) -> None:
    """After mosquitto restarts, the same aggregator is ready, gets new results, sees `down`."""
    aggregator = system.aggregator
    assert aggregator is not None
    assert (await readyz(system))[0] == 200
    assert await system.metric("vigil_broker_connected") == 1

    system.broker.stop(signal.SIGTERM)

    async def disconnected() -> bool:
        code, body = await readyz(system)
        connected = await system.metric("vigil_broker_connected")
        return (
            code == 503
            and body.get("reason") == "not connected to the MQTT broker"
            and (connected == 0)
        )

    await wait_until_async(disconnected, 20, what="the aggregator to notice the broker is gone")
    restarted_at = time.time()
    system.broker.start()  # same port, same persistence directory

    async def reconnected() -> bool:
        code, _ = await readyz(system)
        return code == 200 and await system.metric("vigil_broker_connected") == 1

    await wait_until_async(reconnected, 30, what="/readyz 200 and vigil_broker_connected 1")

    async def fresh_from_every_region() -> bool:
        status = await system.poll()
        regions = status["targets"][0]["regions"] if status["targets"] else []
        return len(regions) == len(REGIONS) and all(
            r["last_result"] is not None and r["last_result"]["started_at"] > restarted_at
            for r in regions
        )

    await wait_until_async(fresh_from_every_region, 30, what="results made after the restart")

    await system.break_target("fail")
    target = await system.wait_verdict("down", limit=30)
    assert sorted(target["quorum"]["failing"]) == sorted(REGIONS)
    # One aggregator process throughout, which lost the broker and subscribed again.
    assert system.aggregator is aggregator
    assert aggregator.proc.poll() is None
    assert aggregator.events("mqtt_lost")
    assert len(aggregator.events("mqtt_subscribed")) >= 2


@contextlib.asynccontextmanager
async def witnessing(port: int) -> AsyncIterator[list[ProbeResult]]:
    """Every live (not retained) result published while inside, as a bystander sees it."""
    seen: list[ProbeResult] = []
    subscribed = asyncio.Event()

    async def watch() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-witness") as client:
            await client.subscribe(RESULTS_FILTER, qos=1)
            subscribed.set()
            async for message in client.messages:
                if not message.retain and isinstance(message.payload, bytes):
                    seen.append(ProbeResult.from_json(message.payload))

    task = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


PER_REGION = 4  # results each probe publishes while the aggregator is away, at least


@pytest.mark.parametrize("restart_broker", [False, True], ids=["broker-up", "broker-restarted"])
async def test_results_published_while_the_aggregator_is_away_reach_its_successor(
    system: System, restart_broker: bool
) -> None:
    """Results published while no aggregator is connected are queued and reach the next one."""
    first = system.aggregator
    assert first is not None
    async with witnessing(system.broker.port) as seen:
        assert first.stop() == 0
        gone_at = time.time()

        def missed(region: str) -> list[ProbeResult]:
            # Scheduled after the aggregator had exited: it cannot have received these.
            return [r for r in seen if r.region == region and r.scheduled_at > gone_at]

        await wait_until(
            lambda: all(len(missed(region)) >= PER_REGION for region in REGIONS),
            limit=30,
            what=f"{PER_REGION} results per region while the aggregator is away",
        )
        # Stop the probes, so whatever the next aggregator counts can only come from the queue.
        for probe in system.probes.values():
            assert probe.stop() == 0  # flushes what it buffered, then exits
    queued = {region: len(missed(region)) for region in REGIONS}
    if restart_broker:
        system.broker.stop(signal.SIGTERM)
        system.broker.start()

    system.start_aggregator()  # the same client_id, so the same session
    assert system.aggregator is not first

    async def delivered() -> bool:
        for region, count in queued.items():
            got = await system.metric(f'vigil_results_received_total{{region="{region}"}}')
            if got < count:
                return False
        # Applied, not only received: each queued result is new to this process.
        return await system.metric("vigil_probe_results_total{") >= sum(queued.values())

    await wait_until_async(delivered, 30, what=f"the queued results {queued}")
