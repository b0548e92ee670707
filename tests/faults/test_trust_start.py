"""A start from scratch with nothing wrong: the pager must stay silent.

The probes run at the default interval (10 s), so each region's first result comes up to
10 s after the aggregator starts listening: silence before it is no reason to page.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Serve
from tests.faults.trustkit import describe, trial
from tests.integration.conftest import REGIONS, Broker

pytestmark = pytest.mark.integration

SOAK = 30.0


async def test_a_healthy_start_posts_no_alert_to_alertmanager(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve
) -> None:
    """Probes and aggregator started together on a healthy target post no alert in 30 s."""
    async with trial(
        broker, demo_target, tmp_path, serve, interval=10.0, check_timeout=2.0, wait_up=False
    ) as t:
        await asyncio.sleep(SOAK)  # the system runs untouched: the window under test
        # It did run and judge: every region reported and the target is up.
        target = await t.system.wait_verdict("up", limit=20)
        assert sorted(r["region"] for r in target["regions"]) == sorted(REGIONS)
        assert all(r["last_result"] is not None for r in target["regions"])

        assert not t.tap.posted, describe(t.tap.posted)
        listed = [(at, alerts) for at, alerts in t.watch.polls if alerts]
        assert not listed, listed[:3]
        assert len(t.watch.polls) >= SOAK, f"only {len(t.watch.polls)} polls of Alertmanager"
        # Alertmanager's own count of alerts received over its API, firing or resolved.
        assert await t.am_metric("alertmanager_alerts_received_total") == 0
        assert not t.webhook.notifications
