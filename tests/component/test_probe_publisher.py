"""The probe's publisher draining its buffer through a fake paho client (aiomqtt's `_client`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from probe.buffer import ResultBuffer
from probe.mqtt import PUBLISH_LIMIT, Publisher
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


class Info:
    def __init__(self, rc: int, mid: int) -> None:
        self.rc = rc
        self.mid = mid


class FakePaho:
    """Records publishes in call order; acknowledges them when told to, or after a turn."""

    def __init__(self, *, auto_ack: bool = True, rc: int = paho.MQTT_ERR_SUCCESS) -> None:
        self.sent: list[tuple[str, bytes, int, bool, int]] = []
        self.auto_ack = auto_ack
        self.rc = rc
        self.downstream: list[int] = []
        self.on_publish: Callable[..., None] | None = self._aiomqtt_on_publish
        self.most_unacked = 0
        self._unacked: set[int] = set()
        self._mid = 0

    def _aiomqtt_on_publish(self, _client: Any, _userdata: Any, mid: int, *_rest: Any) -> None:
        self.downstream.append(mid)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Info:
        if self.rc != paho.MQTT_ERR_SUCCESS:
            return Info(self.rc, 0)
        self._mid += 1
        self.sent.append((topic, payload, qos, retain, self._mid))
        self._unacked.add(self._mid)
        self.most_unacked = max(self.most_unacked, len(self._unacked))
        if self.auto_ack:
            asyncio.get_running_loop().call_soon(self.ack, self._mid)
        return Info(paho.MQTT_ERR_SUCCESS, self._mid)

    def ack(self, mid: int, reason: object = None) -> None:
        self._unacked.discard(mid)
        assert self.on_publish is not None
        self.on_publish(self, None, mid, reason or ReasonCode(PacketTypes.PUBACK), None)


class FakeClient:
    """The two things of an aiomqtt client the publisher uses for results."""

    def __init__(self, fake: FakePaho, timeout: float = 10.0) -> None:
        self._client = fake
        self.timeout = timeout


def publisher(
    buffer: ResultBuffer, published: list[int], refused: list[str] | None = None
) -> Publisher:
    return Publisher(
        MqttSettings(),
        buffer,
        region="r",
        probe_id="p",
        boot_id=BOOT,
        targets={},
        on_published=published.append,
        on_refused=(refused if refused is not None else []).append,
    )


async def until_sent(fake: FakePaho, count: int) -> None:
    """Wait until the publisher has handed `count` results to the fake."""
    async with asyncio.timeout(5):
        while len(fake.sent) < count:  # noqa: ASYNC110 - the fake has no event to wait on
            await asyncio.sleep(0.001)


def drain(pub: Publisher, fake: FakePaho, timeout: float = 10.0) -> asyncio.Task[None]:
    return asyncio.create_task(pub._drain(cast(aiomqtt.Client, FakeClient(fake, timeout))))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_backlog_goes_out_in_order_at_qos_1_retained_within_the_limit() -> None:
    """A backlog beyond the in-flight limit goes out whole, in order, QoS 1, retained.

    Never more than `PUBLISH_LIMIT` wait for their acknowledgement at once.
    """
    buffer = ResultBuffer(10_000)
    published: list[int] = []
    results = [result(seq) for seq in range(1, 2 * PUBLISH_LIMIT + 2)]
    for r in results:
        buffer.put(r)
    fake = FakePaho()
    draining = drain(publisher(buffer, published), fake)
    async with asyncio.timeout(10):
        await buffer.wait_empty()
    await stop(draining)
    sent = fake.sent
    assert [ProbeResult.from_json(p).seq for _, p, *_ in sent] == [r.seq for r in results]
    assert [t for t, *_ in sent] == [f"vigil/v1/results/r/{r.target}" for r in results]
    assert {(qos, retain) for _, _, qos, retain, _ in sent} == {(1, True)}
    assert sum(published) == len(results)
    assert fake.most_unacked == PUBLISH_LIMIT


async def test_results_are_acknowledged_only_through_the_oldest_unacknowledged() -> None:
    """A later PUBACK before an earlier one acknowledges nothing until the earlier comes."""
    buffer = ResultBuffer(10)
    published: list[int] = []
    fake = FakePaho(auto_ack=False)
    draining = drain(publisher(buffer, published), fake)
    for seq in (1, 2, 3):
        buffer.put(result(seq))
    await until_sent(fake, 3)
    fake.ack(fake.sent[1][4])
    fake.ack(fake.sent[2][4])
    assert published == []
    assert len(buffer) == 3
    fake.ack(fake.sent[0][4])
    assert published == [3]
    assert len(buffer) == 0
    assert fake.downstream == []
    await stop(draining)


async def test_a_refused_result_is_counted_dropped_and_holds_nothing_back() -> None:
    """A PUBACK with a failure reason (an ACL's `Not authorized`) is no delivery.

    The result is counted as refused, not published, and dropped: sent again it would get the
    same answer and hold back every result behind it.
    """
    buffer = ResultBuffer(10)
    published: list[int] = []
    refused: list[str] = []
    fake = FakePaho(auto_ack=False)
    draining = drain(publisher(buffer, published, refused), fake)
    for seq in (1, 2, 3):
        buffer.put(result(seq))
    await until_sent(fake, 3)
    fake.ack(fake.sent[1][4], ReasonCode(PacketTypes.PUBACK, "Not authorized"))
    fake.ack(fake.sent[0][4])
    assert refused == ["Not authorized"]
    assert published == [1]
    fake.ack(fake.sent[2][4])
    assert published == [1, 1]
    assert len(buffer) == 0
    await stop(draining)


async def test_a_puback_for_another_publish_goes_on_to_aiomqtt() -> None:
    """Presence goes through aiomqtt: its PUBACK reaches aiomqtt's handler, not the results'.

    When the connection ends, aiomqtt's handler is put back.
    """
    buffer = ResultBuffer(10)
    fake = FakePaho(auto_ack=False)
    draining = drain(publisher(buffer, []), fake)
    await asyncio.sleep(0.01)
    assert fake.on_publish != fake._aiomqtt_on_publish
    fake.ack(999)
    assert fake.downstream == [999]
    await stop(draining)
    assert fake.on_publish == fake._aiomqtt_on_publish


async def test_a_refused_publish_ends_the_connection_and_nothing_is_lost() -> None:
    """Paho refusing a publish (no connection) raises `MqttError`; nothing is lost.

    The result stays buffered and is taken again after the reconnect's rewind.
    """
    buffer = ResultBuffer(10)
    buffer.put(result(1))
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(5):
            await drain(publisher(buffer, []), FakePaho(rc=paho.MQTT_ERR_NO_CONN))
    assert len(buffer) == 1
    buffer.rewind()
    assert [out.result.seq for out in buffer.take(10)] == [1]


async def test_a_publish_never_acknowledged_times_out_the_connection() -> None:
    """A publish never acknowledged ends the connection after the client's timeout.

    Even with no further result to send, so the reconnect sends it again.
    """
    buffer = ResultBuffer(10)
    buffer.put(result(1))
    fake = FakePaho(auto_ack=False)
    with pytest.raises(aiomqtt.MqttError, match="timed out"):
        async with asyncio.timeout(10):
            await drain(publisher(buffer, []), fake, timeout=0.3)
    assert len(fake.sent) == 1
    assert len(buffer) == 1


async def test_aiomqtt_still_has_the_paho_client_the_publisher_uses() -> None:
    """The publisher relies on aiomqtt's `_client` (paho) and its PUBACK callback being set.

    Private to aiomqtt: an upgrade that moves them fails here, not on a live probe.
    """
    from runtime.mqtt import V5, make_client

    client = make_client(MqttSettings(), identifier="contract", protocol=V5)
    assert isinstance(client._client, paho.Client)
    assert client._client.on_publish is not None
    assert isinstance(client.timeout, int | float)
