"""Maintenance windows end to end: the silence mutes Alertmanager, never Vigil's own alerts.

Real mosquitto, the demo target, three probes, the aggregator with a history database and a
real Alertmanager whose webhook receiver is served by the test. Vigil keeps sending ServiceDown
while the window lasts; Alertmanager holds it suppressed by the window's silence, and when the
silence ends it notifies the outage as it is, dated from its true start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from tests.conftest import Serve
from tests.integration.conftest import (
    ROOT,
    Alertmanager,
    Broker,
    System,
    Webhook,
    am_alerts,
    running_system,
)
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration

TARGET = "api"
RESEND = 2.0
# Alertmanager flushes a group every group_interval (1 s, `demo.local.alertmanager_config`);
# this many seconds is several flushes, and resends, on a loaded machine.
SETTLE = 5.0


def parse_time(text: str) -> float:
    """Alertmanager's RFC 3339 timestamp as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class TimedWebhook(Webhook):
    """The webhook receiver, also keeping when each notification arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.received_at: list[float] = []

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        response = await super().handle(request)
        self.received_at.append(time.time())
        return response

    def service_down(self, status: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, alert) of each notified ServiceDown for the target with this status."""
        return [
            (at, a)
            for at, n in zip(self.received_at, self.notifications, strict=True)
            for a in n["alerts"]
            if a["status"] == status
            and a["labels"].get("alertname") == "ServiceDown"
            and a["labels"].get("target") == TARGET
        ]

    def describe(self) -> str:
        lines = [
            f"{at:.3f} {a['status']} {a['labels'].get('alertname')} {a['labels'].get('target')} "
            f"startsAt={a['startsAt']} endsAt={a['endsAt']}"
            for at, n in zip(self.received_at, self.notifications, strict=True)
            for a in n["alerts"]
        ]
        return "webhook notifications:\n" + "\n".join(lines)


@dataclass
class Maintained:
    system: System
    am: Alertmanager
    webhook: TimedWebhook

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.system.session

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.system.port}{path}"

    async def open_window(self, duration_s: float, reason: str) -> dict[str, Any]:
        body = {"target": TARGET, "duration_s": duration_s, "reason": reason}
        async with self.session.post(self.url("/api/v1/maintenance"), json=body) as resp:
            assert resp.status == 201, await resp.text()
            window: dict[str, Any] = await resp.json()
        assert window["errors"] == {}, window
        return window

    async def incidents(self) -> list[dict[str, Any]]:
        async with self.session.get(self.url("/api/v1/incidents"), params={"target": TARGET}) as r:
            assert r.status == 200, await r.text()
            return list((await r.json())["incidents"])

    async def vigil_service_down(self, state: str) -> list[dict[str, Any]]:
        """ServiceDown for the target in the aggregator's own alert book, firing or resolved."""
        async with self.session.get(self.url("/api/v1/alerts")) as resp:
            doc = await resp.json()
        return [
            a
            for a in doc[state]
            if a["labels"]["alertname"] == "ServiceDown" and a["labels"]["target"] == TARGET
        ]

    async def am_service_down(self) -> list[dict[str, Any]]:
        """ServiceDown for the target among Alertmanager's active (not resolved) alerts."""
        return [
            a
            for a in await am_alerts(self.session, self.am)
            if a["labels"]["alertname"] == "ServiceDown" and a["labels"]["target"] == TARGET
        ]

    async def wait_suppressed(self, silence_id: str, limit: float) -> dict[str, Any]:
        """Wait until Alertmanager holds ServiceDown muted by `silence_id`; return it."""
        found: list[dict[str, Any]] = []

        async def suppressed() -> bool:
            found[:] = [
                a
                for a in await self.am_service_down()
                if a["status"]["state"] == "suppressed" and silence_id in a["status"]["silencedBy"]
            ]
            return bool(found)

        await wait_until_async(suppressed, limit, what="ServiceDown suppressed by the silence")
        return found[0]

    async def quiet_until(self, deadline: float, status: str = "firing") -> None:
        """Poll until the wall clock reaches `deadline`; no ServiceDown `status` may arrive."""
        while time.time() < deadline:
            assert not self.webhook.service_down(status), self.webhook.describe()
            await asyncio.sleep(0.1)  # between polls; the deadline bounds the loop
        assert not self.webhook.service_down(status), self.webhook.describe()


@contextlib.asynccontextmanager
async def maintained(
    broker: Broker, demo: str, tmp_path: Path, serve: Serve, *, resend: float = RESEND
) -> AsyncIterator[Maintained]:
    webhook = TimedWebhook()
    hook = await serve(webhook.app()) + "/hook"
    am = Alertmanager(tmp_path / "am", hook)
    am.start()
    try:
        async with running_system(
            broker,
            demo,
            tmp_path,
            storage={"path": str(tmp_path / "history.db")},
            # Generous on a loaded machine: a region going stale mid-outage would be noise.
            rule={"stale_after": "10s"},
            alertmanager={
                "urls": [am.url],
                "resend_interval": f"{resend}s",
                "region_down_for": "3s",
                "labels": {"env": "test"},
            },
        ) as system:
            yield Maintained(system, am, webhook)
    finally:
        am.stop()


async def test_down_through_the_window_end_pages_once_with_its_true_start(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """An outage begun in a window pages when it ends, once, dated from the outage's start."""
    async with maintained(broker, demo_target, tmp_path, serve) as m:
        window = await m.open_window(22, "database migration")
        ends_at = window["ends_at"]
        silence_id = window["silences"][m.am.url]
        assert silence_id, window

        await m.system.break_target("fail")
        held = await m.wait_suppressed(silence_id, limit=ends_at - time.time() - 2)
        starts_at = parse_time(held["startsAt"])
        assert starts_at < ends_at, held
        # Vigil sends it all along, Alertmanager mutes it: nothing pages while the window lasts.
        await m.quiet_until(ends_at)

        await wait_until(
            lambda: m.webhook.service_down("firing"), limit=20, what="the firing notification"
        )
        [(arrived, fired)] = m.webhook.service_down("firing")
        assert arrived >= ends_at, (arrived, ends_at, m.webhook.describe())
        # The same instant; Alertmanager's API and its webhook spell it differently
        # (".780Z" and ".78Z").
        assert parse_time(fired["startsAt"]) == starts_at, m.webhook.describe()
        [incident] = await m.incidents()
        assert incident["open"] is True, incident
        assert incident["maintenance"] is True, incident
        assert abs(incident["started_at"] - starts_at) < 1.0, (incident, held)

        # Several resends and group flushes later: still that one page, not a "new" outage.
        settle = time.monotonic() + SETTLE
        while time.monotonic() < settle:
            assert len(m.webhook.service_down("firing")) == 1, m.webhook.describe()
            await asyncio.sleep(0.2)  # between polls; the loop's bound is the check
        [now_held] = await m.am_service_down()
        assert now_held["status"]["state"] == "active", now_held
        assert now_held["startsAt"] == held["startsAt"], now_held


async def test_recovery_inside_the_window_resolves_and_never_pages(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """An outage that begins and ends in a window resolves, is kept as maintenance, never pages."""
    # Resent rarely, an alert Vigil stopped sending would outlive the window in Alertmanager
    # (endsAt is 4 resends ahead): gone before the window ends, it was resolved.
    async with maintained(broker, demo_target, tmp_path, serve, resend=10.0) as m:
        window = await m.open_window(30, "restart the pool")
        ends_at = window["ends_at"]
        silence_id = window["silences"][m.am.url]
        assert silence_id, window

        await m.system.break_target("fail")
        await m.wait_suppressed(silence_id, limit=ends_at - time.time() - 10)
        await m.system.break_target("ok")
        await m.system.wait_verdict("up", limit=ends_at - time.time() - 3)
        assert await m.vigil_service_down("resolved"), "Vigil did not resolve ServiceDown"
        # Resolved: Alertmanager lists an alert only until its endsAt.
        await wait_until_async(
            lambda: _none(m.am_service_down()),
            limit=max(0.0, ends_at - time.time()),
            what="ServiceDown resolved in Alertmanager before the window ends",
        )
        assert time.time() < ends_at, "the recovery was not seen inside the window"
        [incident] = await m.incidents()
        assert incident["open"] is False, incident
        assert incident["maintenance"] is True, incident
        assert incident["ended_at"] < ends_at, (incident, window)

        # Past the silence's end by several group flushes: no page for what is over.
        await m.quiet_until(ends_at + SETTLE)
        assert await m.am_service_down() == []


async def test_window_lists_active_with_its_silence_held_by_alertmanager(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """`vigil maintenance` records an active window whose silence Alertmanager holds."""
    async with maintained(broker, demo_target, tmp_path, serve) as m:
        before = time.time()
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "cli.main",
                "maintenance",
                TARGET,
                "--for",
                "2m",
                "kernel upgrade",
                "--url",
                m.url(""),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "silenced on 1 of 1 Alertmanager" in done.stdout, done.stdout

        async with m.session.get(m.url("/api/v1/maintenance")) as resp:
            assert resp.status == 200
            [window] = (await resp.json())["windows"]
        assert window["target"] == TARGET, window
        assert window["active"] is True, window
        assert window["reason"] == "kernel upgrade", window
        assert window["errors"] == {}, window
        assert list(window["silences"]) == [m.am.url], window
        silence_id = window["silences"][m.am.url]
        assert silence_id, window
        assert before - 1 <= window["starts_at"] <= time.time(), window
        assert abs(window["ends_at"] - window["starts_at"] - 120) < 0.01, window

        async with m.session.get(f"{m.am.url}/api/v2/silences") as resp:
            assert resp.status == 200
            [silence] = [s for s in await resp.json() if s["id"] == silence_id]
        assert silence["status"]["state"] == "active", silence
        # Only this Vigil's alerts about the target: its static labels and alert names.
        matchers = {(x["name"], x["value"], x["isRegex"]) for x in silence["matchers"]}
        assert matchers == {
            ("env", "test", False),
            ("target", TARGET, False),
            ("alertname", "ServiceDown|ServiceRegionDown|ServiceVersionSkew", True),
        }, silence
        assert "kernel upgrade" in silence["comment"], silence
        assert abs(parse_time(silence["endsAt"]) - window["ends_at"]) < 0.01, silence
        # Another tool's alert about the same target is not muted; Vigil's own is.
        foreign = [
            {"labels": {"alertname": "HighLatency", "target": TARGET, "env": "test"}},
            {"labels": {"alertname": "ServiceDown", "target": TARGET, "env": "prod"}},
            {"labels": {"alertname": "ServiceDown", "target": TARGET, "env": "test", "x": "1"}},
        ]
        async with m.session.post(f"{m.am.url}/api/v2/alerts", json=foreign) as resp:
            assert resp.status == 200

        async def states() -> dict[tuple[str, str], str]:
            async with m.session.get(f"{m.am.url}/api/v2/alerts") as resp:
                return {
                    (a["labels"]["alertname"], a["labels"]["env"]): a["status"]["state"]
                    for a in await resp.json()
                    if a["labels"].get("target") == TARGET
                }

        async def judged() -> bool:
            return len(await states()) == 3

        await wait_until_async(judged, 20, what="Alertmanager to hold the three alerts")
        assert await states() == {
            ("HighLatency", "test"): "active",
            ("ServiceDown", "prod"): "active",
            ("ServiceDown", "test"): "suppressed",
        }

        # A window opened by mistake ends early: its silence expires in the Alertmanager.
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli.main", "maintenance", "--end", str(window["id"])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "VIGIL_URL": m.url("")},
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        async with m.session.get(f"{m.am.url}/api/v2/silences") as resp:
            [silence] = [s for s in await resp.json() if s["id"] == silence_id]
        assert silence["status"]["state"] == "expired", silence
        async with m.session.get(m.url("/api/v1/maintenance")) as resp:
            assert (await resp.json())["windows"] == []

        async def unmuted() -> bool:
            return (await states())[("ServiceDown", "test")] == "active"

        await wait_until_async(unmuted, 20, what="the alert no longer suppressed")


async def _none(items: Awaitable[list[dict[str, Any]]]) -> bool:
    return not await items
