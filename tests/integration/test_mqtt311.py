"""Both services against an MQTT 3.1.1-only broker (the embedded amqtt) and against mosquitto.

`protocol: auto` tries MQTT 5 first; amqtt never answers an MQTT 5 CONNECT, so the first
attempt times out and the next one falls back to 3.1.1. Mosquitto speaks MQTT 5: no fallback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from demo.local import free_port, wait_port
from tests.integration.conftest import (
    AnyBroker,
    Broker,
    EmbeddedBroker,
    Process,
    aggregator_config,
    probe_config,
    start_aggregator,
    start_probe,
)
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

# aiomqtt gives a CONNECT 10 s before giving up on an unanswered one; then comes 3.1.1.
FALLBACK_LIMIT = 60.0


@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path / "amqtt")
    b.start()
    yield b
    b.stop()


@dataclass
class Pair:
    """One probe (us-east) and an aggregator judging that one region."""

    probe: Process
    aggregator: Process
    port: int
    session: aiohttp.ClientSession

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"http://127.0.0.1:{self.port}/api/v1/status") as resp:
            return dict(await resp.json())

    async def metric(self, name: str) -> float:
        async with self.session.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)
        )

    async def wait_up(self, limit: float) -> dict[str, Any]:
        """Wait for the target's verdict `up`, judged from this probe's results."""
        status: dict[str, Any] = {}

        async def up() -> bool:
            nonlocal status
            status = await self.status()
            targets = status["targets"]
            return bool(status["ready"] and targets and targets[0]["verdict"] == "up")

        await wait_until_async(up, limit, what="verdict up")
        return dict(status["targets"][0])


@contextlib.asynccontextmanager
async def running_pair(
    broker: AnyBroker, demo: str, tmp: Path, protocol: str | None
) -> AsyncIterator[Pair]:
    mqtt: dict[str, Any] = {"url": broker.url, "reconnect_max": "1s"}
    if protocol is not None:
        mqtt["protocol"] = protocol
    probe = start_probe(
        probe_config(
            tmp / "probe.yaml",
            broker,
            demo,
            mqtt=mqtt,
            targets=[{"name": "api", "url": demo, "interval": 0.5, "timeout": 0.4}],
        ),
        tmp / "probe.log",
    )
    port = free_port()
    aggregator = start_aggregator(
        aggregator_config(
            tmp / "aggregator.yaml",
            broker,
            port,
            mqtt=mqtt,
            regions=["us-east"],
            rule={"regions": 1, "min_regions": 1},
        ),
        tmp / "aggregator.log",
    )
    try:
        wait_port(port)
        async with aiohttp.ClientSession() as session:
            yield Pair(probe, aggregator, port, session)
    finally:
        for proc in (probe, aggregator):
            if proc.proc.poll() is None:
                proc.stop()


async def test_auto_falls_back_to_311_on_an_mqtt311_only_broker(
    embedded_broker: EmbeddedBroker, demo_target: str, tmp_path: Path
) -> None:
    """With `protocol: auto`, probe and aggregator fall back to 3.1.1 on amqtt and judge `up`."""
    async with running_pair(embedded_broker, demo_target, tmp_path, protocol=None) as pair:
        target = await pair.wait_up(FALLBACK_LIMIT)
        [view] = target["regions"]
        assert view["last_result"]["ok"]
        assert await pair.metric("vigil_results_received_total") >= 1
        assert await pair.metric("vigil_broker_connected") == 1
        for proc in (pair.probe, pair.aggregator):
            fallbacks = proc.events("mqtt_protocol_fallback")
            assert fallbacks, f"{proc.log.name}: no mqtt_protocol_fallback"
            assert fallbacks[0]["protocol"] == "V311"
            # Once connected the version is settled: no more switching back and forth.
            assert len(fallbacks) == 1, fallbacks
            assert proc.events("mqtt_connected")
        [connected] = pair.aggregator.events("mqtt_connected")
        assert connected["protocol"] == "V311"


async def test_explicit_311_connects_to_an_mqtt311_only_broker_at_once(
    embedded_broker: EmbeddedBroker, demo_target: str, tmp_path: Path
) -> None:
    """With `protocol: "3.1.1"`, both connect to amqtt without trying MQTT 5 and judge `up`."""
    async with running_pair(embedded_broker, demo_target, tmp_path, protocol="3.1.1") as pair:
        target = await pair.wait_up(30)
        [view] = target["regions"]
        assert view["last_result"]["ok"]
        for proc in (pair.probe, pair.aggregator):
            assert not proc.events("mqtt_protocol_fallback")
            assert not proc.events("mqtt_connect_failed")
            assert proc.events("mqtt_connected")
        [connected] = pair.aggregator.events("mqtt_connected")
        assert connected["protocol"] == "V311"


async def test_auto_uses_mqtt5_on_mosquitto(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """With `protocol: auto` against mosquitto, both services connect with MQTT 5, no fallback."""
    async with running_pair(broker, demo_target, tmp_path, protocol=None) as pair:
        await pair.wait_up(30)
        for proc in (pair.probe, pair.aggregator):
            assert not proc.events("mqtt_protocol_fallback")
            assert not proc.events("mqtt_connect_failed")
        [connected] = pair.aggregator.events("mqtt_connected")
        assert connected["protocol"] == "V5"
    # The broker's own word: `p5` is the protocol level of each client's CONNECT.
    log = (broker.dir / "mosquitto.log").read_text()
    assert "as vigil-aggregator-test (p5," in log
    assert "as vigil-probe-us-east-us-east-1 (p5," in log
    assert "(p4," not in log
