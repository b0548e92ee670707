"""Alerts end to end: real probes, broker, aggregator and Alertmanager, a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Serve
from tests.integration.conftest import (
    Alertmanager,
    Broker,
    System,
    Webhook,
    am_alerts,
    running_system,
)
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration

RUNBOOK = "https://runbooks.example/vigil/service-down"


@dataclass
class Alerting:
    system: System
    managers: list[Alertmanager]
    webhook: Webhook
    session: aiohttp.ClientSession

    async def wait_alert(
        self, am: Alertmanager, alertname: str, limit: float = 30
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        async def present() -> bool:
            found[:] = [
                a
                for a in await am_alerts(self.session, am)
                if a["labels"]["alertname"] == alertname
            ]
            return bool(found)

        await wait_until_async(present, limit, what=f"{alertname} in {am.url}")
        return found[0]


@contextlib.asynccontextmanager
async def alerting(
    broker: Broker, demo: str, tmp_path: Path, serve: Serve, *, peers: int = 1
) -> AsyncIterator[Alerting]:
    webhook = Webhook()
    hook_url = await serve(webhook.app()) + "/hook"
    managers: list[Alertmanager] = []
    for i in range(peers):
        am = Alertmanager(
            tmp_path / f"am{i}",
            hook_url,
            cluster=peers > 1,
            peers=tuple(m.cluster_address for m in managers),
        )
        am.start()
        managers.append(am)
    try:
        async with (
            aiohttp.ClientSession() as session,
            running_system(
                broker,
                demo,
                tmp_path,
                alertmanager={
                    "urls": [m.url for m in managers],
                    "resend_interval": "2s",
                    # At a 0.5 s interval the regions confirm within a second or two.
                    "region_down_for": "3s",
                    "labels": {"team": "platform"},
                    "runbook_url": RUNBOOK,
                    "external_url": "http://vigil.test:8080",
                },
            ) as system,
        ):
            yield Alerting(system, managers, webhook, session)
    finally:
        for am in managers:
            am.stop()


async def test_service_down_fires_and_resolves(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """ServiceDown reaches Alertmanager exactly as built; the webhook hears it fire and resolve."""
    async with alerting(broker, demo_target, tmp_path, serve) as a:
        await a.system.break_target("fail")
        alert = await a.wait_alert(a.managers[0], "ServiceDown")
        assert alert["labels"] == {
            "alertname": "ServiceDown",
            "severity": "critical",
            "sev": "SEV-1",
            "target": "api",
            "team": "platform",
        }
        notes = alert["annotations"]
        assert notes["summary"] == "api is down: failing from 3 of 3 regions"
        assert notes["runbook_url"] == RUNBOOK
        assert notes["quorum"] == "full"
        assert "database connection failed" in notes["description"]
        assert "Versions seen: 3.8.34." in notes["description"]
        assert alert["generatorURL"] == "http://vigil.test:8080/targets/api"
        await wait_until(
            lambda: a.webhook.alerts("firing", "ServiceDown"), limit=20, what="firing webhook"
        )
        await asyncio.sleep(5)  # several resends later: still exactly one notification
        assert len(a.webhook.alerts("firing", "ServiceDown")) == 1

        await a.system.break_target("ok")
        await wait_until(
            lambda: a.webhook.alerts("resolved", "ServiceDown"), limit=30, what="resolved webhook"
        )
        resolved = a.webhook.alerts("resolved", "ServiceDown")[0]
        assert resolved["startsAt"].startswith(alert["startsAt"][:19])


async def test_ha_pair_both_hold_the_alert_webhook_notified_once(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """Two clustered Alertmanagers both receive the alert; the receiver hears it once."""
    async with alerting(broker, demo_target, tmp_path, serve, peers=2) as a:

        async def clustered() -> bool:
            for am in a.managers:
                async with a.session.get(f"{am.url}/api/v2/status") as resp:
                    cluster = (await resp.json())["cluster"]
                if cluster["status"] != "ready" or len(cluster.get("peers") or []) != 2:
                    return False
            return True

        await wait_until_async(clustered, 30, what="a two-peer cluster")
        await a.system.break_target("fail")
        for am in a.managers:
            await a.wait_alert(am, "ServiceDown")
        await wait_until(
            lambda: a.webhook.alerts("firing", "ServiceDown"), limit=20, what="firing webhook"
        )
        await asyncio.sleep(8)  # past the peers' dedup window (peer timeout 2 s)
        assert len(a.webhook.alerts("firing", "ServiceDown")) == 1


async def test_alertmanager_outage_loses_nothing(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """An alert that fires while Alertmanager is down for 30 s is there once it returns."""
    async with alerting(broker, demo_target, tmp_path, serve) as a:
        am = a.managers[0]
        am.stop()
        await a.system.break_target("fail")
        await a.system.wait_verdict("down")
        await asyncio.sleep(30)
        am.start()
        alert = await a.wait_alert(am, "ServiceDown", limit=60)
        assert alert["labels"]["target"] == "api"
        assert (
            await a.system.metric(
                'vigil_alertmanager_posts_total{alertmanager="' + am.url + '",outcome="retry"}'
            )
            > 0
        )


async def test_region_down_then_probe_offline(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """One region failing raises ServiceRegionDown only; a killed probe raises ProbeOffline."""
    async with alerting(broker, demo_target, tmp_path, serve) as a:
        am = a.managers[0]
        await a.system.break_target("fail", region="eu-west")
        alert = await a.wait_alert(am, "ServiceRegionDown")
        assert alert["labels"]["region"] == "eu-west"
        assert (alert["labels"]["severity"], alert["labels"]["sev"]) == ("warning", "SEV-3")
        names = {x["labels"]["alertname"] for x in await am_alerts(a.session, am)}
        assert names == {"ServiceRegionDown"}
        a.system.probes["ap-southeast"].stop(signal.SIGKILL)
        offline = await a.wait_alert(am, "ProbeOffline")
        assert offline["labels"]["region"] == "ap-southeast"
        assert offline["labels"]["severity"] == "warning"
