"""The whole path on 127.0.0.1: three real probes, a real broker, the real aggregator.

The demo target answers per region (it reads the X-Vigil-Region header every probe sends),
so one region's view can fail alone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from demo.local import free_port, wait_port
from tests.integration.conftest import (
    REGIONS,
    Broker,
    Process,
    aggregator_config,
    probe_config,
    start_aggregator,
    start_probe,
)
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration

INTERVAL = 0.5


@dataclass
class System:
    broker: Broker
    demo: str
    tmp: Path
    session: aiohttp.ClientSession
    port: int = field(default_factory=free_port)
    probes: dict[str, Process] = field(default_factory=dict)
    aggregator: Process | None = None
    status: dict[str, Any] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)
    generation: int = 0

    def start_probe(self, region: str) -> None:
        config = probe_config(
            self.tmp / f"probe-{region}.yaml",
            self.broker,
            self.demo,
            region=region,
            targets=[{"name": "api", "url": self.demo, "interval": INTERVAL, "timeout": 0.4}],
        )
        self.probes[region] = start_probe(config, self.tmp / f"probe-{region}.log")

    def start_aggregator(self) -> None:
        self.generation += 1
        config = aggregator_config(self.tmp / "aggregator.yaml", self.broker, self.port)
        self.aggregator = start_aggregator(config, self.tmp / f"aggregator-{self.generation}.log")
        wait_port(self.port)

    async def poll(self) -> dict[str, Any]:
        async with self.session.get(f"http://127.0.0.1:{self.port}/api/v1/status") as resp:
            self.status = await resp.json()
        targets = self.status["targets"]
        if self.status["ready"] and targets:
            self.verdicts.append(targets[0]["verdict"])
        return self.status

    async def wait_verdict(self, verdict: str, limit: float = 30.0) -> dict[str, Any]:
        async def check() -> bool:
            status = await self.poll()
            return bool(
                status["ready"] and status["targets"] and status["targets"][0]["verdict"] == verdict
            )

        deadline = time.monotonic() + limit
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"verdict never became {verdict}: {self.status}")
            await __import__("asyncio").sleep(0.1)
        return dict(self.status["targets"][0])

    async def break_target(self, mode: str, region: str | None = None) -> None:
        body: dict[str, Any] = {"mode": mode}
        if region:
            body["region"] = region
        async with self.session.post(f"{self.demo}/_demo/state", json=body) as resp:
            assert resp.status == 200

    async def metric(self, name: str) -> float:
        async with self.session.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
async def system(broker: Broker, demo_target: str, tmp_path: Path) -> AsyncIterator[System]:
    async with aiohttp.ClientSession() as session:
        s = System(broker, demo_target, tmp_path, session)
        for region in REGIONS:
            s.start_probe(region)
        s.start_aggregator()
        try:
            await s.wait_verdict("up")
            yield s
        finally:
            for proc in s.probes.values():
                proc.stop()
            if s.aggregator is not None:
                s.aggregator.stop()


async def test_one_region_failing_is_only_degraded(system: System) -> None:
    """One region's view failing gives `degraded`, never `down`."""
    await system.break_target("fail", region="eu-west")
    target = await system.wait_verdict("degraded")
    failing = [r["region"] for r in target["regions"] if r["failing"]]
    assert failing == ["eu-west"]
    region = next(r for r in target["regions"] if r["region"] == "eu-west")
    assert region["error_kind"] == "http_status"
    assert "database connection failed" in region["error"]
    # Many more intervals pass; it must stay degraded.
    settle = time.monotonic() + 10 * INTERVAL
    while time.monotonic() < settle:
        await system.poll()
    assert "down" not in system.verdicts


async def test_outage_goes_down_then_recovers(system: System) -> None:
    """All regions failing is `down` within N intervals plus slack; K successes bring `up`."""
    started = time.monotonic()
    await system.break_target("fail")
    target = await system.wait_verdict("down", limit=3 * INTERVAL + 10)
    took = time.monotonic() - started
    assert not target["quorum_degraded"]
    assert sorted(target["quorum"]["failing"]) == sorted(REGIONS)
    assert took < 3 * INTERVAL + 10
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
    assert stale["stale_reason"] == "probe offline"
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
    await wait_until(lambda: True)

    async def rejected() -> float:
        return await system.metric("vigil_results_rejected_total")

    deadline = time.monotonic() + 15
    while await rejected() < 600:
        assert time.monotonic() < deadline, await rejected()
    async with system.session.get(f"http://127.0.0.1:{system.port}/healthz") as resp:
        assert resp.status == 200
    await system.break_target("fail")
    await system.wait_verdict("down")
