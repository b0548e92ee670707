"""The probe's publisher draining its buffer through a fake client at the aiomqtt seam."""

from __future__ import annotations

import asyncio
from typing import cast

import aiomqtt

from probe.buffer import ResultBuffer
from probe.mqtt import PUBLISH_BATCH, Publisher
from runtime.config import MqttSettings
from wire.result import ProbeResult

BOOT = "b" * 32


def result(seq: int) -> ProbeResult:
    return ProbeResult(
        probe_id="p",
        region="r",
        target=f"t{seq % 7}",
        boot_id=BOOT,
        seq=seq,
        scheduled_at=1.0,
        started_at=1.0,
        duration_ms=1.0,
        ok=True,
        consecutive_failures=0,
        consecutive_successes=1,
    )


class FakeClient:
    """Records publishes in call order; acknowledges each after a turn of the loop."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append((topic, payload, qos, retain))
        await asyncio.sleep(0)


async def test_a_backlog_goes_out_in_order_at_qos_1_retained() -> None:
    """A backlog larger than one round is published whole, in order, QoS 1, retained."""
    buffer = ResultBuffer(10_000)
    published: list[int] = []
    publisher = Publisher(
        MqttSettings(),
        buffer,
        region="r",
        probe_id="p",
        boot_id=BOOT,
        targets={},
        on_published=published.append,
    )
    results = [result(seq) for seq in range(1, 2 * PUBLISH_BATCH + 2)]
    for r in results:
        buffer.put(r)
    client = FakeClient()
    draining = asyncio.create_task(publisher._drain(cast(aiomqtt.Client, client)))
    async with asyncio.timeout(10):
        await buffer.wait_empty()
    draining.cancel()
    assert [ProbeResult.from_json(p).seq for _, p, _, _ in client.sent] == [r.seq for r in results]
    assert [t for t, *_ in client.sent] == [f"vigil/v1/results/r/{r.target}" for r in results]
    assert {(qos, retain) for *_, qos, retain in client.sent} == {(1, True)}
    assert published == [PUBLISH_BATCH, PUBLISH_BATCH, 1]
