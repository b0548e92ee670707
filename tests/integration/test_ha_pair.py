"""An HA pair of aggregators in front of a real Alertmanager: one page per outage, whatever dies.

Real mosquitto, real Alertmanager, the demo target, three probes and two aggregators with the
same config and different client ids. One aggregator hears the outage late (it is paused
while the other fires), so if startsAt came from each instance's clock of arrival the two
would disagree by seconds; they must agree exactly, since both date it from the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from demo.local import free_port, wait_port
from tests.conftest import Serve
from tests.integration.conftest import (
    REGIONS,
    Alertmanager,
    Broker,
    Process,
    Webhook,
    aggregator_config,
    am_alerts,
    probe_config,
    start_aggregator,
    start_probe,
)
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration

INTERVAL = 0.5
RESEND = 2.0


def am_config(hook: str) -> dict[str, Any]:
    """Notify `hook` quickly, resolutions too, and never repeat within the test."""
    return {
        "route": {
            "receiver": "hook",
            "group_by": ["alertname", "target"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "4h",  # a repeat would be a second firing notification
        },
        "receivers": [{"name": "hook", "webhook_configs": [{"url": hook, "send_resolved": True}]}],
    }


def parse_time(text: str) -> float:
    """Alertmanager's RFC 3339 timestamp as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Instance:
    """One aggregator of the pair: its own client id, port and log per start."""

    name: str
    config: Path
    port: int
    tmp: Path
    starts: int = 0
    proc: Process | None = None

    def start(self) -> None:
        self.starts += 1
        self.proc = start_aggregator(self.config, self.tmp / f"{self.name}-{self.starts}.log")
        wait_port(self.port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass
class Pair:
    session: aiohttp.ClientSession
    demo: str
    am: Alertmanager
    webhook: Webhook
    aggregators: dict[str, Instance]
    probes: list[Process] = field(default_factory=list)

    async def status(self, agg: Instance) -> dict[str, Any]:
        async with self.session.get(agg.url("/api/v1/status")) as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    async def wait_verdict(self, agg: Instance, verdict: str, limit: float = 40.0) -> None:
        async def reached() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                status = await self.status(agg)
                targets = status["targets"]
                return bool(status["ready"] and targets and targets[0]["verdict"] == verdict)
            return False

        await wait_until_async(reached, limit, what=f"{agg.name}: verdict {verdict}")

    async def service_down(self, agg: Instance, state: str = "firing") -> list[dict[str, Any]]:
        """ServiceDown for `api` in the aggregator's own alert book, firing or resolved."""
        async with self.session.get(agg.url("/api/v1/alerts")) as resp:
            doc = await resp.json()
        return [
            a
            for a in doc[state]
            if a["labels"]["alertname"] == "ServiceDown" and a["labels"]["target"] == "api"
        ]

    async def am_service_down(self) -> list[dict[str, Any]]:
        return [
            a
            for a in await am_alerts(self.session, self.am)
            if a["labels"]["alertname"] == "ServiceDown" and a["labels"]["target"] == "api"
        ]

    async def set_target(self, mode: str) -> None:
        async with self.session.post(f"{self.demo}/_demo/state", json={"mode": mode}) as resp:
            assert resp.status == 200

    def notified(self, status: str) -> list[dict[str, Any]]:
        return [
            a for a in self.webhook.alerts(status, "ServiceDown") if a["labels"]["target"] == "api"
        ]

    def describe(self) -> str:
        lines = [
            f"{a['status']} {a['labels'].get('alertname')} {a['labels'].get('target')} "
            f"startsAt={a['startsAt']} endsAt={a['endsAt']}"
            for n in self.webhook.notifications
            for a in n["alerts"]
        ]
        return "webhook notifications:\n" + "\n".join(lines)


@contextlib.asynccontextmanager
async def ha_pair(broker: Broker, demo: str, tmp_path: Path, serve: Serve) -> AsyncIterator[Pair]:
    webhook = Webhook()
    hook = await serve(webhook.app()) + "/hook"
    # One peer: the pair's identical alerts collapse into one notification whatever the
    # number of peers, and every peer receives the same posts from both aggregators.
    am = Alertmanager(tmp_path / "am", hook)
    am.config.write_text(yaml.safe_dump(am_config(hook)))
    am.start()
    aggregators: dict[str, Instance] = {}
    for name in ("agg-a", "agg-b"):
        port = free_port()
        path = aggregator_config(
            tmp_path / f"{name}.yaml",
            broker,
            port,
            client_id=name,
            # Generous on a loaded machine: a region going stale mid-outage would be noise.
            rule={"stale_after": "10s"},
            alertmanager={
                "urls": [am.url],
                "resend_interval": f"{RESEND}s",
                "region_down_for": "3s",
            },
        )
        aggregators[name] = Instance(name, path, port, tmp_path)
    async with aiohttp.ClientSession() as session:
        pair = Pair(session, demo, am, webhook, aggregators)
        try:
            for region in REGIONS:
                path = probe_config(
                    tmp_path / f"probe-{region}.yaml",
                    broker,
                    demo,
                    region=region,
                    targets=[
                        {
                            "name": "api",
                            "url": demo,
                            "interval": INTERVAL,
                            "timeout": 0.4,
                            "version_auth_header": "Bearer ${DEMO_KEY}",
                        }
                    ],
                )
                pair.probes.append(start_probe(path, tmp_path / f"probe-{region}.log"))
            for agg in aggregators.values():
                agg.start()
            for agg in aggregators.values():
                await pair.wait_verdict(agg, "up")
            yield pair
        finally:
            for proc in pair.probes:
                if proc.proc.poll() is None:
                    proc.stop()
            for agg in aggregators.values():
                if agg.proc is not None and agg.proc.proc.poll() is None:
                    agg.proc.proc.send_signal(signal.SIGCONT)  # in case a test left it paused
                    agg.proc.stop()
            am.stop()


async def test_ha_pair_pages_once_through_a_kill_and_restart(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """Both aggregators date ServiceDown alike; killing one mid-outage changes nothing seen."""
    async with ha_pair(broker, demo_target, tmp_path, serve) as pair:
        a, b = pair.aggregators["agg-a"], pair.aggregators["agg-b"]
        assert a.proc is not None
        assert b.proc is not None
        # b hears the outage seconds after a: paused while a judges and fires.
        b.proc.proc.send_signal(signal.SIGSTOP)
        try:
            await pair.set_target("fail")
            await wait_until_async(pair.am_service_down, 30, what="ServiceDown in Alertmanager")
            [listed] = await pair.am_service_down()
            starts_at = listed["startsAt"]
            [from_a] = await pair.service_down(a)
            await wait_until(lambda: pair.notified("firing"), 20, what="the firing notification")
        finally:
            b.proc.proc.send_signal(signal.SIGCONT)
        await wait_until_async(lambda: pair.service_down(b), 30, what="agg-b's ServiceDown")
        [from_b] = await pair.service_down(b)
        # The same moment from the same results, though b judged it seconds later.
        assert from_b["starts_at"] == from_a["starts_at"], (from_a, from_b)
        assert abs(parse_time(starts_at) - from_a["starts_at"]) < 0.001, (starts_at, from_a)

        # kill -9 a: b alone keeps the alert active in Alertmanager, with its startsAt, for
        # longer than an alert a sent last lives there (endsAt = 4 resend intervals ahead).
        a.proc.stop(signal.SIGKILL)
        watch_until = time.monotonic() + 4 * RESEND + 2
        while time.monotonic() < watch_until:
            listed_now = await pair.am_service_down()
            assert [x["startsAt"] for x in listed_now] == [starts_at], listed_now
            assert listed_now[0]["status"]["state"] == "active", listed_now
            await asyncio.sleep(0.5)  # between polls; the loop's bound is the check

        # a comes back with its own session and records: the outage still dates from then.
        a.start()
        await pair.wait_verdict(a, "down")
        [restored] = await pair.service_down(a)
        assert restored["starts_at"] == from_a["starts_at"], (restored, from_a)

        await pair.set_target("ok")
        for agg in (a, b):
            resolved_in = functools.partial(pair.service_down, agg, "resolved")
            await wait_until_async(resolved_in, 30, what=f"{agg.name} resolves")
        await wait_until(lambda: pair.notified("resolved"), 20, what="the resolved notification")
        # Both resolutions are in; a late firing post would now show within a group interval.
        settle = time.monotonic() + 4.0
        while time.monotonic() < settle:
            assert len(pair.notified("firing")) == 1, pair.describe()
            await asyncio.sleep(0.2)
        assert len(pair.notified("firing")) == 1, pair.describe()
        assert len(pair.notified("resolved")) == 1, pair.describe()
        [fired], [resolved] = pair.notified("firing"), pair.notified("resolved")
        # Instants, not strings: the webhook spells ".670Z" as ".67Z".
        assert (
            parse_time(fired["startsAt"])
            == parse_time(resolved["startsAt"])
            == parse_time(starts_at)
        ), pair.describe()
