"""The client-side MQTT maximum packet size, negotiated with a real mosquitto on MQTT 5.

A client built by `runtime.mqtt.make_client` tells the broker the largest packet it accepts;
the broker then drops bigger publishes for that client (logging each one) instead of sending
them, so a 100 MiB message is never read by a service that wants at most a few KiB.
"""

from __future__ import annotations

import asyncio

import pytest

from runtime.config import MqttSettings
from runtime.mqtt import V5, make_client
from tests.integration.conftest import Broker

pytestmark = pytest.mark.integration

TOPIC = "vigil-test/packet-size"
LIMIT = 4096


async def test_a_packet_over_the_clients_limit_never_reaches_it(broker: Broker) -> None:
    """A publish larger than the subscriber's max_packet_size is dropped; a small one arrives."""
    small = MqttSettings(url=broker.url, max_packet_size=LIMIT)
    default = MqttSettings(url=broker.url)
    received: list[bytes] = []
    async with (
        make_client(small, identifier="packet-size-rx", protocol=V5) as rx,
        make_client(default, identifier="packet-size-tx", protocol=V5) as tx,
    ):
        await rx.subscribe(TOPIC, qos=1)
        # One topic, so the broker delivers in order: the small one arriving after the big
        # one proves the big one was dropped, not merely late.
        await tx.publish(TOPIC, b"x" * (LIMIT * 3), qos=1)
        await tx.publish(TOPIC, b"small", qos=1)
        async with asyncio.timeout(10):
            async for message in rx.messages:
                assert isinstance(message.payload, bytes)
                received.append(message.payload)
                if message.payload == b"small":
                    break
    assert [len(payload) for payload in received] == [len(b"small")]
    log = (broker.dir / "mosquitto.log").read_text(errors="replace")
    assert "Dropping too large outgoing PUBLISH for packet-size-rx" in log
