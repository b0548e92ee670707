"""The probe's /healthz and /metrics endpoints, on a fresh registry."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from probe.http import make_app
from probe.metrics import ProbeMetrics
from wire.result import Phases, ProbeResult

BOOT = "a" * 32


def result(ok: bool, **kw: object) -> ProbeResult:
    fields: dict[str, object] = {
        "probe_id": "p",
        "region": "r",
        "target": "api",
        "boot_id": BOOT,
        "seq": 1,
        "scheduled_at": 1.0,
        "started_at": 1.0,
        "duration_ms": 250.0,
        "ok": ok,
        "consecutive_failures": 0 if ok else 1,
        "consecutive_successes": 1 if ok else 0,
    }
    fields.update(kw)
    return ProbeResult.model_validate(fields)


async def test_healthz_and_metrics() -> None:
    """/healthz answers ok and /metrics shows blackbox-style gauges for the latest result."""
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    metrics.observe(
        result(
            True,
            status_code=200,
            phases=Phases(connect=1.5, tls=2.0, ttfb=3.0),
            tls_not_after=1_900_000_000.0,
        )
    )
    metrics.observe(result(False, error_kind="timeout"))
    async with TestClient(TestServer(make_app(registry), host="127.0.0.1")) as client:
        health = await client.get("/healthz")
        assert health.status == 200
        assert await health.json() == {"status": "ok"}
        page = await client.get("/metrics")
        assert page.status == 200
        text = await page.text()
    assert 'probe_success{target="api"} 0.0' in text
    get = registry.get_sample_value
    assert get("probe_duration_seconds", {"target": "api"}) == 0.25
    assert get("probe_http_status_code", {"target": "api"}) == 0
    assert get("probe_http_duration_seconds", {"target": "api", "phase": "tls"}) == 0.002
    assert get("probe_ssl_earliest_cert_expiry", {"target": "api"}) == 1_900_000_000.0
    assert get("vigil_probe_results_total", {"target": "api", "outcome": "ok"}) == 1
    assert get("vigil_probe_results_total", {"target": "api", "outcome": "timeout"}) == 1


def test_metrics_keep_targets_apart_and_add_phases_as_they_appear() -> None:
    """Each target's gauges follow its own latest result; a phase first seen later appears."""
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    metrics.observe(result(True, status_code=200, phases=Phases(connect=1.0)))
    metrics.observe(result(True, target="web", status_code=204, duration_ms=5.0))
    metrics.observe(result(True, status_code=200, phases=Phases(connect=2.0, ttfb=4.0)))
    get = registry.get_sample_value
    assert get("probe_http_status_code", {"target": "api"}) == 200
    assert get("probe_http_status_code", {"target": "web"}) == 204
    assert get("probe_duration_seconds", {"target": "web"}) == 0.005
    assert get("probe_http_duration_seconds", {"target": "api", "phase": "connect"}) == 0.002
    assert get("probe_http_duration_seconds", {"target": "api", "phase": "ttfb"}) == 0.004
    assert get("probe_http_duration_seconds", {"target": "web", "phase": "connect"}) is None
    assert get("vigil_probe_results_total", {"target": "api", "outcome": "ok"}) == 2
    assert get("vigil_probe_results_total", {"target": "web", "outcome": "ok"}) == 1


def test_an_inconclusive_result_is_counted_apart_and_leaves_success_alone() -> None:
    """A probe-side error counts as `inconclusive`, not as the target failing."""
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    metrics.observe(result(True, status_code=200))
    metrics.observe(result(False, error_kind="internal", inconclusive=True, consecutive_failures=0))
    get = registry.get_sample_value
    assert get("probe_success", {"target": "api"}) == 1
    assert get("vigil_probe_results_total", {"target": "api", "outcome": "inconclusive"}) == 1
    assert get("vigil_probe_results_total", {"target": "api", "outcome": "internal"}) is None
