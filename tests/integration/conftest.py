"""Real processes on 127.0.0.1: a mosquitto broker, the demo target, probe agents.

A missing mosquitto binary fails the run: integration tests never skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import yaml

from demo.local import (
    alertmanager_args,
    alertmanager_binary,
    alertmanager_config,
    free_port,
    mosquitto_binary,
    mosquitto_conf,
    wait_port,
)
from tests.polling import wait_until_async

ROOT = Path(__file__).resolve().parents[2]


def find_mosquitto() -> str:
    path = mosquitto_binary()
    if path is None:
        pytest.fail(
            "mosquitto is not installed: run `make test` (it installs it) "
            "or `apt-get install mosquitto`"
        )
    return path


class Broker:
    """A mosquitto on a loopback port with persistence, so it can be stopped and restarted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            mosquitto_conf(
                self.port, workdir, persistence=True, extra="max_queued_messages 100000\n"
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)])
        wait_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Process:
    """A Python module run as a child process, with its stderr kept in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == name:
                found.append(doc)
        return found

    def stop(self, sig: int = signal.SIGTERM, limit: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=limit)
        self._log_file.close()
        return code


class EmbeddedBroker:
    """`python -m demo.broker`: the embedded amqtt broker, MQTT 3.1.1 only, on a loopback port."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "amqtt.log"
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.proc: Process | None = None

    def start(self) -> None:
        assert importlib.util.find_spec("amqtt") is not None, "amqtt comes with the test extra"
        self.proc = Process(["-m", "demo.broker", "--port", str(self.port)], self.log)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.proc = None


AnyBroker = Broker | EmbeddedBroker


@pytest.fixture
def demo_target(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = Process(
        ["-m", "demo.target", "--port", str(port), "--api-key", "sk-demo"], tmp_path / "demo.log"
    )
    wait_port(port)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def probe_config(
    path: Path, broker: AnyBroker, target_url: str, *, region: str = "us-east", **extra: Any
) -> Path:
    doc: dict[str, Any] = {
        "region": region,
        "probe_id": f"{region}-1",
        "mqtt": {"url": broker.url, "reconnect_max": "1s"},
        "listen": "127.0.0.1:0",
        "targets": [
            {
                "name": name,
                "url": target_url,
                "interval": "500ms",
                "timeout": "400ms",
                "version_auth_header": "Bearer ${DEMO_KEY}",
            }
            for name in ("api", "api2")
        ],
    }
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc))
    return path


def start_probe(config: Path, log: Path) -> Process:
    return Process(["-m", "probe", "--config", str(config)], log, env={"DEMO_KEY": "sk-demo"})


REGIONS = ("us-east", "eu-west", "ap-southeast")


def aggregator_config(path: Path, broker: AnyBroker, port: int, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "mqtt": {"url": broker.url, "reconnect_max": "1s"},
        "listen": f"127.0.0.1:{port}",
        "regions": list(REGIONS),
        "startup_grace": "3s",
        "client_id": "vigil-aggregator-test",
    }
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc))
    return path


def start_aggregator(config: Path, log: Path) -> Process:
    return Process(["-m", "aggregator", "--config", str(config)], log)


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
    aggregator_extra: dict[str, Any] = field(default_factory=dict)

    def start_probe(self, region: str) -> None:
        config = probe_config(
            self.tmp / f"probe-{region}.yaml",
            self.broker,
            self.demo,
            region=region,
            targets=[
                {
                    "name": "api",
                    "url": self.demo,
                    "interval": INTERVAL,
                    "timeout": 0.4,
                    "version_auth_header": "Bearer ${DEMO_KEY}",
                }
            ],
        )
        self.probes[region] = start_probe(config, self.tmp / f"probe-{region}.log")

    def start_aggregator(self) -> None:
        self.generation += 1
        config = aggregator_config(
            self.tmp / "aggregator.yaml", self.broker, self.port, **self.aggregator_extra
        )
        self.aggregator = start_aggregator(config, self.tmp / f"aggregator-{self.generation}.log")
        proc = self.aggregator.proc
        wait_port(self.port, alive=lambda: proc.poll() is None)

    async def poll(self) -> dict[str, Any]:
        async with self.session.get(f"http://127.0.0.1:{self.port}/api/v1/status") as resp:
            self.status = await resp.json()
        targets = self.status["targets"]
        if self.status["ready"] and targets:
            self.verdicts.append(targets[0]["verdict"])
        return self.status

    async def wait_verdict(self, verdict: str, limit: float = 30.0) -> dict[str, Any]:
        async def reached() -> bool:
            status = await self.poll()
            targets = status["targets"]
            return bool(status["ready"] and targets and targets[0]["verdict"] == verdict)

        await wait_until_async(reached, limit, what=f"verdict {verdict}")
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


@contextlib.asynccontextmanager
async def running_system(
    broker: Broker, demo_target: str, tmp_path: Path, **aggregator_extra: Any
) -> AsyncIterator[System]:
    """Three probes (one per region) and an aggregator, all real processes, target up."""
    async with aiohttp.ClientSession() as session:
        s = System(broker, demo_target, tmp_path, session, aggregator_extra=aggregator_extra)
        try:
            for region in REGIONS:
                s.start_probe(region)
            s.start_aggregator()
            await s.wait_verdict("up")
            yield s
        finally:
            # Exited or not: stop() also closes each one's log file.
            for proc in s.probes.values():
                proc.stop()
            if s.aggregator is not None:
                s.aggregator.stop()


@pytest.fixture
async def system(broker: Broker, demo_target: str, tmp_path: Path) -> AsyncIterator[System]:
    async with running_system(broker, demo_target, tmp_path) as s:
        yield s


def find_alertmanager() -> str:
    path = alertmanager_binary()
    if path is None:
        pytest.fail(
            "prometheus-alertmanager is not installed: run `make test` (it installs it) "
            "or `apt-get install prometheus-alertmanager`"
        )
    return path


class Alertmanager:
    """A real Alertmanager on loopback whose receiver is a webhook served by the test."""

    def __init__(
        self, workdir: Path, webhook: str, *, cluster: bool = False, peers: tuple[str, ...] = ()
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.port = free_port()
        self.cluster_address = f"127.0.0.1:{free_port()}" if cluster else ""
        self.peers = peers
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(yaml.safe_dump(alertmanager_config(webhook)))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = alertmanager_args(
            find_alertmanager(), self.config, self.dir / "data", self.port, self.cluster_address
        )
        args.append("--log.level=warn")
        if self.cluster_address:
            args += [
                f"--cluster.advertise-address={self.cluster_address}",
                "--cluster.peer-timeout=2s",
                "--cluster.gossip-interval=100ms",
            ]
            args += [f"--cluster.peer={peer}" for peer in self.peers]
        with (self.dir / "alertmanager.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        proc = self.proc
        wait_port(self.port, alive=lambda: proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None


class Webhook:
    """The receiver Alertmanager notifies: keeps every notification it gets."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.notifications.append(await request.json())
        return aiohttp.web.Response(text="ok")

    def app(self) -> aiohttp.web.Application:
        app = aiohttp.web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    def alerts(self, status: str, alertname: str) -> list[dict[str, Any]]:
        """Notified alerts with this status and name, one per notification."""
        return [
            a
            for n in self.notifications
            for a in n["alerts"]
            if a["status"] == status and a["labels"].get("alertname") == alertname
        ]


async def am_alerts(session: aiohttp.ClientSession, am: Alertmanager) -> list[dict[str, Any]]:
    """The alerts an Alertmanager holds (active ones, as its API lists by default)."""
    async with session.get(f"{am.url}/api/v2/alerts") as resp:
        assert resp.status == 200
        return list(await resp.json())
