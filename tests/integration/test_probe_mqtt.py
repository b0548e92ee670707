"""The probe agent as a real process publishing to a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.conftest import ROOT, Broker, probe_config, start_probe
from tests.polling import wait_until
from wire.result import Presence, ProbeResult
from wire.topics import PRESENCE_FILTER, RESULTS_FILTER, parse_result_topic

pytestmark = pytest.mark.integration


class Collector:
    """A persistent-session subscriber that reconnects, like the aggregator will."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self.results: list[tuple[str, ProbeResult, aiomqtt.Message]] = []
        self.presence: list[Presence] = []
        self.arrived_at: list[float] = []

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.broker.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=False,
                ) as client:
                    await client.subscribe(RESULTS_FILTER, qos=1)
                    await client.subscribe(PRESENCE_FILTER, qos=1)
                    async for message in client.messages:
                        topic = str(message.topic)
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        if topic.startswith("vigil/v1/results/"):
                            self.results.append((topic, ProbeResult.from_json(payload), message))
                            self.arrived_at.append(time.time())
                        else:
                            self.presence.append(Presence.from_json(payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def seqs(self, target: str) -> list[int]:
        return [r.seq for _, r, _ in self.results if r.target == target]


@contextlib.asynccontextmanager
async def collecting(broker: Broker, client_id: str) -> AsyncIterator[Collector]:
    collector = Collector(broker, client_id)
    task = asyncio.create_task(collector.run())
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_results_arrive_on_their_topics_qos1_and_retained(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """Each result lands on vigil/v1/results/{region}/{target} with QoS 1 and is retained."""
    async with collecting(broker, "test-live") as live:
        probe = start_probe(
            probe_config(tmp_path / "p.yaml", broker, demo_target), tmp_path / "p.log"
        )
        try:
            await wait_until(
                lambda: len(live.seqs("api")) >= 3 and len(live.seqs("api2")) >= 3,
                limit=20,
                what="three results per target",
            )
        finally:
            assert probe.stop() == 0
    for topic, result, message in live.results:
        assert parse_result_topic(topic) == ("us-east", result.target)
        assert message.qos == 1
        assert result.region == "us-east"
        assert result.ok, result.error
        assert result.version == "3.8.34"
    assert live.seqs("api")[:3] == [1, 2, 3]
    online = [p for p in live.presence if p.status == "online"]
    assert online
    assert online[0].targets == {"api": 0.5, "api2": 0.5}

    # A subscriber arriving later still gets the latest result of each target, retained.
    async with aiomqtt.Client("127.0.0.1", broker.port) as late:
        await late.subscribe("vigil/v1/results/us-east/+", qos=1)
        retained: dict[str, ProbeResult] = {}
        async with asyncio.timeout(10):
            async for message in late.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                r = ProbeResult.from_json(message.payload)
                retained[r.target] = r
                if len(retained) == 2:
                    break
    assert retained["api"].seq == max(live.seqs("api"))


async def test_broker_outage_loses_nothing(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """With the broker down for 20 s, every result made meanwhile arrives later, in order."""
    probe = start_probe(
        probe_config(tmp_path / "p.yaml", broker, demo_target, buffer_size=10_000),
        tmp_path / "p.log",
    )
    try:
        async with collecting(broker, "test-outage") as sub:
            await wait_until(lambda: len(sub.seqs("api")) >= 3, limit=20, what="first results")
            stopped_at = time.time()
            broker.stop()
            await asyncio.sleep(20)  # the outage itself, not a wait for a result
            restarted_at = time.time()
            broker.start()
            # At 2 checks/s per target, 20 s of outage is about 40 results per target.
            await wait_until(
                lambda: any(r.scheduled_at > restarted_at + 2 for _, r, _ in sub.results),
                limit=60,
                what="results after the restart",
            )
    finally:
        assert probe.stop() == 0
    for target in ("api", "api2"):
        seqs = sub.seqs(target)
        # Duplicates are allowed (a publish whose ack was lost is sent again): dedup, keep order.
        first_seen = list(dict.fromkeys(seqs))
        assert first_seen == sorted(first_seen), f"{target} out of order"
        assert first_seen == list(range(1, first_seen[-1] + 1)), f"{target} has gaps"
        during = [
            r
            for _, r, _ in sub.results
            if r.target == target and stopped_at + 1 < r.scheduled_at < restarted_at - 1
        ]
        assert len(during) >= 30, f"only {len(during)} {target} results from the outage"
    assert probe.events("mqtt_lost") or probe.events("mqtt_connect_failed")


async def test_kill_9_publishes_offline_presence(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """When the probe dies without a goodbye, the broker delivers its `offline` last will."""
    async with collecting(broker, "test-will") as sub:
        probe = start_probe(
            probe_config(tmp_path / "p.yaml", broker, demo_target), tmp_path / "p.log"
        )
        await wait_until(
            lambda: any(p.status == "online" for p in sub.presence), limit=20, what="online"
        )
        boot_id = next(p.boot_id for p in sub.presence if p.status == "online")
        probe.stop(signal.SIGKILL)
        await wait_until(
            lambda: any(p.status == "offline" for p in sub.presence), limit=20, what="offline"
        )
    offline = [p for p in sub.presence if p.status == "offline"][-1]
    assert offline.boot_id == boot_id
    assert (offline.region, offline.probe_id) == ("us-east", "us-east-1")


async def test_sigterm_flushes_says_offline_and_exits_0(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """SIGTERM stops scheduling, publishes what is buffered, says `offline` and exits 0."""
    async with collecting(broker, "test-term") as sub:
        probe = start_probe(
            probe_config(tmp_path / "p.yaml", broker, demo_target), tmp_path / "p.log"
        )
        await wait_until(lambda: len(sub.seqs("api")) >= 2, limit=20, what="results")
        started = time.monotonic()
        assert probe.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        await wait_until(
            lambda: any(p.status == "offline" for p in sub.presence), limit=10, what="offline"
        )
    stopped = probe.events("probe_stopped")
    assert stopped
    assert stopped[0]["unsent"] == 0


async def test_once_prints_and_publishes(broker: Broker, demo_target: str, tmp_path: Path) -> None:
    """--once prints one JSON line per target and publishes them to the broker."""
    config = probe_config(tmp_path / "p.yaml", broker, demo_target)
    async with collecting(broker, "test-once") as sub:
        await asyncio.sleep(0)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "probe", "--config", str(config), "--once"],
            cwd=ROOT,
            capture_output=True,
            env={"DEMO_KEY": "sk-demo", "PATH": "/usr/bin:/bin"},
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = [ProbeResult.from_json(line) for line in done.stdout.splitlines()]
        assert sorted(r.target for r in lines) == ["api", "api2"]
        await wait_until(lambda: len(sub.results) >= 2, limit=10, what="published results")
