"""Turning verdicts into alerts, and when each alert is (re)sent."""

from __future__ import annotations

import aiohttp
import pytest

from aggregator.config import Rule
from aggregator.core.alerts import AlertBook, AlertSettings, desired_alerts
from aggregator.core.rules import PRESENCE_SETTLE_S, Engine
from aggregator.edges.alertmanager import Outcome, classify_status, is_retryable
from runtime.clock import rfc3339
from tests.rulekit import BOOT, REGIONS, T0, RegionProbe, engine, state
from wire.result import Presence, VersionErrorKind

SETTINGS = AlertSettings(
    labels={"team": "platform", "env": "prod"},
    runbook_url="https://runbooks.example/vigil",
    external_url="http://vigil.example:8080/",
)


def outage(e: Engine, regions: tuple[str, ...] = REGIONS, start: float = T0) -> float:
    probes = [RegionProbe(r) for r in REGIONS]
    for i in range(4):
        t = start + 10 * i
        for p in probes:
            e.apply_result(p.check(i == 0 or p.region not in regions, t), t)
        e.evaluate("api", t)
    return start + 30


def test_service_down_labels_and_annotations() -> None:
    """ServiceDown carries exactly the documented labels, and evidence in annotations."""
    e = engine()
    now = outage(e)
    [alert] = desired_alerts(e, now, SETTINGS).values()
    assert dict(alert.labels) == {
        "alertname": "ServiceDown",
        "severity": "critical",
        "sev": "SEV-1",
        "target": "api",
        "team": "platform",
        "env": "prod",
    }
    assert alert.annotations["summary"] == "api is down: failing from 3 of 3 regions"
    assert alert.annotations["runbook_url"] == "https://runbooks.example/vigil"
    assert alert.annotations["quorum"] == "full"
    description = alert.annotations["description"]
    for region in REGIONS:
        assert f"{region}: failing since" in description
    assert "3 consecutive failures, last error http_status: HTTP 503" in description
    assert "Versions seen: 3.8.34." in description
    assert alert.generator_url == "http://vigil.example:8080/targets/api"
    assert alert.starts_at == state(e).since


def test_service_down_says_each_regions_version_and_why_it_is_unknown() -> None:
    """ServiceDown names the running version per region and, where none is known, why.

    The why carries the status the version endpoint answered (`auth (403)`), and nothing
    where no answer came (`connect`).
    """
    e = engine()
    us, eu, ap = (RegionProbe(r) for r in REGIONS)
    auth = {"version": None, "version_error": VersionErrorKind.AUTH, "version_status": 403}
    for i in range(4):
        t = T0 + 10 * i
        ok = i == 0
        # us-east read 3.7.9 before the outage; its fetches fail with the service since.
        us_result = us.check(ok, t, "3.7.9")
        if not ok:
            us_result = us_result.model_copy(
                update={"version": None, "version_error": VersionErrorKind.CONNECT}
            )
        e.apply_result(us_result, t)
        e.apply_result(eu.check(ok, t, None).model_copy(update=auth), t)
        e.apply_result(ap.check(ok, t, None).model_copy(update=auth), t)
        e.evaluate("api", t)
    [alert] = desired_alerts(e, T0 + 30, SETTINGS).values()
    description = alert.annotations["description"]
    assert "us-east: failing since" in description
    assert "version 3.7.9 (last fetch: connect)" in description
    assert "eu-west: failing since" in description
    assert "version unknown: auth (403)" in description
    assert "Versions seen: 3.7.9." in description


def test_versions_seen_says_why_when_no_region_knows_one() -> None:
    """With no version anywhere, the summary line gives each region's reason."""
    e = engine()
    probes = [RegionProbe(r) for r in REGIONS]
    auth = {"version": None, "version_error": VersionErrorKind.AUTH}
    for i in range(4):
        t = T0 + 10 * i
        for p in probes:
            e.apply_result(p.check(i == 0, t, None).model_copy(update=auth), t)
        e.evaluate("api", t)
    [alert] = desired_alerts(e, T0 + 30, SETTINGS).values()
    assert (
        "Versions seen: unknown (us-east: auth; eu-west: auth; ap-southeast: auth)."
        in alert.annotations["description"]
    )


def test_degraded_quorum_is_an_annotation_not_a_label() -> None:
    """When the quorum degrades the alert keeps its identity; annotations say so."""
    e = engine()
    now = outage(e)
    before = desired_alerts(e, now, SETTINGS)
    e.apply_presence(
        Presence(
            status="offline", probe_id="ap-southeast-1", region="ap-southeast", boot_id=BOOT, at=now
        ),
        now,
    )
    now += PRESENCE_SETTLE_S + 0.1  # once the offline has settled
    e.evaluate("api", now)
    after = desired_alerts(e, now, SETTINGS)
    down = [a for a in after.values() if a.labels["alertname"] == "ServiceDown"]
    assert [a.fingerprint for a in down] == list(before)
    assert down[0].annotations["quorum"] == "degraded"
    assert "degraded quorum: ap-southeast without fresh data" in down[0].annotations["summary"]
    assert any(a.labels["alertname"] == "ProbeOffline" for a in after.values())


def test_one_region_failing_is_region_down_only() -> None:
    """A single failing region raises ServiceRegionDown with its region, not ServiceDown."""
    e = engine()
    now = outage(e, regions=("eu-west",))
    [alert] = desired_alerts(e, now, SETTINGS).values()
    assert alert.labels["alertname"] == "ServiceRegionDown"
    assert (alert.labels["severity"], alert.labels["sev"]) == ("warning", "SEV-3")
    assert (alert.labels["target"], alert.labels["region"]) == ("api", "eu-west")


def test_a_stale_failing_region_raises_no_region_down() -> None:
    """ServiceRegionDown names only fresh failing regions; a silent one is ProbeOffline's job."""
    e = engine()
    us, eu, ap = (RegionProbe(r) for r in REGIONS)
    for i in range(3):  # eu-west fails three times, then its probe falls silent
        e.apply_result(eu.check(False, T0 + 10 * i), T0 + 10 * i)
    for i in range(7):
        t = T0 + 10 * i
        e.apply_result(us.check(False, t), t)
        e.apply_result(ap.check(True, t), t)
    now = T0 + 60
    e.evaluate("api", now)
    assert state(e).regions["eu-west"].failing
    assert state(e).stale == {"eu-west"}
    alerts = desired_alerts(e, now, SETTINGS).values()
    region_down = sorted(
        a.labels["region"] for a in alerts if a.labels["alertname"] == "ServiceRegionDown"
    )
    assert region_down == ["us-east"]
    offline = [a.labels["region"] for a in alerts if a.labels["alertname"] == "ProbeOffline"]
    assert offline == ["eu-west"]


def test_version_skew_alert() -> None:
    """Versions that differ past the grace period raise ServiceVersionSkew (info, SEV-4)."""
    e = engine(Rule(version_skew_after=10))
    a, b = RegionProbe("us-east"), RegionProbe("eu-west")
    for i in range(3):
        t = T0 + 10 * i
        e.apply_result(a.check(True, t, "3.8.34"), t)
        e.apply_result(b.check(True, t, "3.8.35"), t)
        e.evaluate("api", t)
    [alert] = desired_alerts(e, T0 + 20, SETTINGS).values()
    assert alert.labels["alertname"] == "ServiceVersionSkew"
    assert (alert.labels["severity"], alert.labels["sev"]) == ("info", "SEV-4")
    assert "us-east: 3.8.34" in alert.annotations["description"]


def test_healthy_targets_raise_nothing() -> None:
    """Up targets with one version want no alerts."""
    e = engine()
    probes = [RegionProbe(r) for r in REGIONS]
    for p in probes:
        e.apply_result(p.check(True, T0), T0)
    e.evaluate("api", T0)
    assert desired_alerts(e, T0, SETTINGS) == {}


def test_book_fires_resends_and_resolves() -> None:
    """An alert is sent at once, re-sent while firing, then resolved and re-sent a while."""
    e = engine()
    now = outage(e)
    book = AlertBook(resend_interval=60, resolved_retention=900)
    desired = desired_alerts(e, now, SETTINGS)
    [first] = book.update(desired, now)
    starts = first["startsAt"]
    assert first["endsAt"] == rfc3339(now + 240)
    assert book.firing()["ServiceDown"] == 1
    assert book.update(desired, now + 30) == []
    [again] = book.update(desired, now + 61)
    assert again["startsAt"] == starts  # startsAt never moves while it fires
    assert again["endsAt"] == rfc3339(now + 61 + 240)
    resolved_at = now + 100
    [resolved] = book.update({}, resolved_at)
    assert resolved["endsAt"] == rfc3339(resolved_at)
    assert resolved["startsAt"] == starts
    assert book.firing()["ServiceDown"] == 0
    assert book.update({}, resolved_at + 30) == []
    [resent] = book.update({}, resolved_at + 61)
    assert resent["endsAt"] == rfc3339(resolved_at)
    assert book.update({}, resolved_at + 901) == []
    assert book.active() == []


def test_starts_at_is_kept_from_the_first_send() -> None:
    """If the engine's idea of when it began shifts, the alert's startsAt does not."""
    e = engine()
    now = outage(e)
    book = AlertBook(resend_interval=60)
    [first] = book.update(desired_alerts(e, now, SETTINGS), now)
    state(e).since = now + 5  # e.g. a verdict re-derived after a restart
    [later] = book.update(desired_alerts(e, now + 70, SETTINGS), now + 70)
    assert later["startsAt"] == first["startsAt"]


def test_quorum_change_is_sent_at_once() -> None:
    """A change of quorum is sent without waiting for the resend interval."""
    e = engine()
    now = outage(e)
    book = AlertBook(resend_interval=60)
    book.update(desired_alerts(e, now, SETTINGS), now)
    e.apply_presence(
        Presence(status="offline", probe_id="us-east-1", region="us-east", boot_id=BOOT, at=now),
        now,
    )
    later = now + PRESENCE_SETTLE_S + 0.1
    e.evaluate("api", later)
    sent = book.update(desired_alerts(e, later, SETTINGS), later)
    names = sorted(p["labels"]["alertname"] for p in sent)
    assert names == ["ProbeOffline", "ServiceDown"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
def test_retry_classification_by_status(status: int, outcome: Outcome) -> None:
    """5xx and 429 are retried; other 4xx are not (alertmanager's notify/util.go rule)."""
    assert classify_status(status) is outcome


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (aiohttp.ClientConnectionError("refused"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ValueError("bug"), False),
    ],
)
def test_retry_classification_by_exception(exc: BaseException, retry: bool) -> None:
    """Connection errors and timeouts are retried; a bug is not."""
    assert is_retryable(exc) is retry
