"""A real system put under faults, and two witnesses of what Alertmanager received.

Alertmanager's API lists the alerts active now, never their history, and a webhook hears
only what survives grouping and deduplication, so an alert that fires and resolves within a
second can leave no trace in either. Two witnesses stand in for a history:

- `AlertTap` stands between the aggregator and a real Alertmanager: it forwards every
  `POST /api/v2/alerts` byte for byte and keeps each alert it carried together with
  Alertmanager's answer, so every alert Alertmanager received is there, however short-lived.
- `AlertWatch` polls `GET /api/v2/alerts` every 0.2 s and keeps every alert Alertmanager
  listed, with the `startsAt` Alertmanager itself holds.

Alertmanager's own counters (`alertmanager_alerts_received_total`, `..._invalid_total`)
check the tap where a count is all a test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import glob
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Serve
from tests.integration.conftest import (
    REGIONS,
    Alertmanager,
    Broker,
    Process,
    System,
    Webhook,
    probe_config,
)
from tests.polling import wait_until_async

# Every alert update is re-sent this often, so Alertmanager sees endsAt = now + 8 s.
RESEND_INTERVAL = 2.0


def matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether `labels` include every label in `wanted`."""
    return all(labels.get(k) == v for k, v in wanted.items())


def parse_time(text: str) -> float:
    """RFC 3339 (as Vigil and Alertmanager write it) to epoch seconds."""
    return datetime.datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class Posted:
    """One alert in one POST that reached Alertmanager, with Alertmanager's answer."""

    at: float
    alert: Mapping[str, Any]
    status: int

    @property
    def name(self) -> str:
        return str(self.alert["labels"]["alertname"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.alert["labels"])

    @property
    def starts_at(self) -> str:
        return str(self.alert["startsAt"])

    @property
    def resolved(self) -> bool:
        # A firing alert ends 4 x resend_interval from when it was sent; a resolved one ends
        # when it resolved, so at or before it reached Alertmanager.
        return parse_time(str(self.alert["endsAt"])) <= self.at + 1.0


class AlertTap:
    """Forwards the aggregator's alert POSTs to a real Alertmanager and keeps every alert."""

    def __init__(self, alertmanager: str, session: aiohttp.ClientSession) -> None:
        self._endpoint = f"{alertmanager}/api/v2/alerts"
        self._session = session
        self.posted: list[Posted] = []
        self.answers: list[tuple[int, str]] = []

    async def _forward(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.read()
        if self._session.closed:
            # A POST the aggregator sent as it was stopped, read once the test was over.
            return aiohttp.web.Response(status=503, text="the tap is closed")
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            async with self._session.post(self._endpoint, data=body, headers=headers) as resp:
                answer = await resp.read()
                status = resp.status
                content_type = resp.content_type
        except aiohttp.ClientError as exc:
            # Alertmanager did not take it: the aggregator retries, as it would without a tap.
            self.answers.append((502, repr(exc)))
            return aiohttp.web.Response(status=502, text=repr(exc))
        at = time.time()
        self.answers.append((status, answer.decode(errors="replace")[:500]))
        for alert in json.loads(body):
            self.posted.append(Posted(at, alert, status))
        return aiohttp.web.Response(status=status, body=answer, content_type=content_type)

    def app(self) -> aiohttp.web.Application:
        app = aiohttp.web.Application()
        app.router.add_post("/api/v2/alerts", self._forward)
        return app

    def named(self, name: str, since: float = 0.0) -> list[Posted]:
        """Alerts with this alertname that reached Alertmanager at or after `since`."""
        return [p for p in self.posted if p.name == name and p.at >= since]

    def since(self, since: float) -> list[Posted]:
        """Every alert that reached Alertmanager at or after `since`."""
        return [p for p in self.posted if p.at >= since]


@dataclass(frozen=True)
class Listed:
    """One alert as one poll of Alertmanager's API listed it."""

    name: str
    labels: tuple[tuple[str, str], ...]
    starts_at: str
    state: str


@dataclass
class AlertWatch:
    """Every poll of Alertmanager's alert list: when, and what it listed."""

    polls: list[tuple[float, list[Listed]]] = field(default_factory=list)

    def between(self, start: float, end: float = float("inf")) -> list[tuple[float, list[Listed]]]:
        """The polls answered in [start, end]."""
        return [(at, alerts) for at, alerts in self.polls if start <= at <= end]

    def listed(self, name: str, since: float = 0.0) -> list[Listed]:
        """Every listing of an alert with this alertname, one per poll that showed it."""
        return [a for at, alerts in self.polls if at >= since for a in alerts if a.name == name]


async def list_alerts(session: aiohttp.ClientSession, alertmanager: str) -> list[Listed]:
    """The alerts Alertmanager holds now (active, silenced, inhibited and unprocessed)."""
    async with session.get(f"{alertmanager}/api/v2/alerts") as resp:
        assert resp.status == 200, await resp.text()
        docs = await resp.json()
    return [
        Listed(
            name=str(d["labels"]["alertname"]),
            labels=tuple(sorted(d["labels"].items())),
            starts_at=str(d["startsAt"]),
            state=str(d["status"]["state"]),
        )
        for d in docs
    ]


@contextlib.asynccontextmanager
async def watching(
    session: aiohttp.ClientSession, alertmanager: str, every: float = 0.2
) -> AsyncIterator[AlertWatch]:
    """Poll Alertmanager's alert list every `every` seconds while inside."""
    watch = AlertWatch()

    async def poll() -> None:
        while True:
            alerts = await list_alerts(session, alertmanager)
            watch.polls.append((time.time(), alerts))
            await asyncio.sleep(every)

    task = asyncio.create_task(poll())
    try:
        yield watch
    finally:
        if task.done():
            task.result()  # a poll that failed fails the test: the watch was blind
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`, in an exposition."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def faketime_env(shift: str) -> dict[str, str]:
    """Environment that runs a process under Debian's libfaketime, its wall clock shifted.

    Only the wall clock moves: the monotonic clock (the probe's schedule, uvloop's timers)
    is left alone, as on a machine whose NTP is off.
    """
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert found, "libfaketime is not installed: apt-get install faketime"
    return {"LD_PRELOAD": found[0], "FAKETIME": shift, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@dataclass
class Trial:
    """Three probes, the aggregator and a real Alertmanager behind the tap, on 127.0.0.1."""

    system: System
    alertmanager: Alertmanager
    tap: AlertTap
    watch: AlertWatch
    webhook: Webhook

    async def am_metric(self, name: str, **labels: str) -> float:
        """A metric of Alertmanager itself, summed over matching samples."""
        async with self.system.session.get(f"{self.alertmanager.url}/metrics") as resp:
            text = await resp.text()
        assert f"\n{name}{{" in text, f"Alertmanager exposes no {name}"
        return metric_value(text, name, **labels)

    async def metric(self, name: str, **labels: str) -> float:
        """A metric of the aggregator, summed over matching samples."""
        url = f"http://127.0.0.1:{self.system.port}/metrics"
        async with self.system.session.get(url) as resp:
            assert resp.status == 200
            return metric_value(await resp.text(), name, **labels)

    async def wait_posted(self, name: str, limit: float = 30.0, **labels: str) -> Posted:
        """The first alert with this name and labels to reach Alertmanager."""

        def first() -> Posted | None:
            for p in self.tap.named(name):
                if matches(p.labels, labels):
                    return p
            return None

        async def posted() -> bool:
            return first() is not None

        await wait_until_async(posted, limit, what=f"{name} {labels} posted to Alertmanager")
        found = first()
        assert found is not None
        return found

    async def wait_listed(self, name: str, limit: float = 30.0, **labels: str) -> Listed:
        """The first listing by Alertmanager of an alert with this name and labels."""

        def first() -> Listed | None:
            for _, alerts in self.watch.polls:
                for a in alerts:
                    if a.name == name and matches(dict(a.labels), labels):
                        return a
            return None

        async def listed() -> bool:
            return first() is not None

        await wait_until_async(listed, limit, what=f"{name} {labels} listed by Alertmanager")
        found = first()
        assert found is not None
        return found

    async def wait_not_listed(self, name: str, limit: float = 30.0) -> None:
        """Until a poll of Alertmanager lists no alert with this name."""

        async def gone() -> bool:
            return bool(self.watch.polls) and not any(
                a.name == name for a in self.watch.polls[-1][1]
            )

        await wait_until_async(gone, limit, what=f"{name} gone from Alertmanager")


def start_probe(
    system: System, region: str, interval: float, timeout: float, clock_shift: str | None
) -> Process:
    """A real probe process for one region checking the demo target as `api`."""
    config = probe_config(
        system.tmp / f"probe-{region}.yaml",
        system.broker,
        system.demo,
        region=region,
        targets=[
            {
                "name": "api",
                "url": system.demo,
                "interval": interval,
                "timeout": timeout,
                "version_auth_header": "Bearer ${DEMO_KEY}",
            }
        ],
    )
    env = {"DEMO_KEY": "sk-demo"}
    if clock_shift is not None:
        env.update(faketime_env(clock_shift))
    log = system.tmp / f"probe-{region}.log"
    return Process(["-m", "probe", "--config", str(config)], log, env=env)


@contextlib.asynccontextmanager
async def trial(
    broker: Broker,
    demo: str,
    tmp_path: Path,
    serve: Serve,
    *,
    interval: float = 0.5,
    check_timeout: float = 0.4,
    clocks: Mapping[str, str] | None = None,
    aggregator: Mapping[str, Any] | None = None,
    wait_up: bool = True,
) -> AsyncIterator[Trial]:
    """Alertmanager, the tap and the watch first; then three probes and the aggregator.

    `clocks` shifts a region's probe wall clock with libfaketime (`{"eu-west": "-2.5s"}`);
    `aggregator` adds keys to the aggregator's config. With `wait_up`, returns once the
    target is judged `up`.
    """
    webhook = Webhook()
    alertmanager = Alertmanager(tmp_path / "am", await serve(webhook.app()) + "/hook")
    alertmanager.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            # A fresh connection per POST: no race with Alertmanager closing an idle one.
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as forward,
        ):
            tap = AlertTap(alertmanager.url, forward)
            tap_url = await serve(tap.app())
            async with watching(session, alertmanager.url) as watch:
                system = System(
                    broker,
                    demo,
                    tmp_path,
                    session,
                    aggregator_extra={
                        "alertmanager": {
                            "urls": [tap_url],
                            "resend_interval": f"{RESEND_INTERVAL:g}s",
                        },
                        **(aggregator or {}),
                    },
                )
                try:
                    for region in REGIONS:
                        shift = (clocks or {}).get(region)
                        system.probes[region] = start_probe(
                            system, region, interval, check_timeout, shift
                        )
                    system.start_aggregator()
                    if wait_up:
                        await system.wait_verdict("up", limit=60)
                    yield Trial(system, alertmanager, tap, watch, webhook)
                finally:
                    for proc in system.probes.values():
                        if proc.proc.poll() is None:
                            proc.stop()
                    if system.aggregator is not None and system.aggregator.proc.poll() is None:
                        system.aggregator.stop()
    finally:
        alertmanager.stop()


def describe(posted: list[Posted]) -> list[str]:
    """Alerts as short lines for assertion messages."""
    return [
        f"{p.at:.1f} {p.name} {p.labels.get('target', '')}/{p.labels.get('region', '')} "
        f"startsAt={p.starts_at} {'resolved' if p.resolved else 'firing'} -> {p.status}"
        for p in posted
    ]
