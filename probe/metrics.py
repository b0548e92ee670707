"""The probe's Prometheus metrics, on a registry it is given.

Per-target gauges use blackbox_exporter's names so existing dashboards and alerts carry over.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wire.result import ProbeResult


class ProbeMetrics:
    """All metrics of one probe process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.success = Gauge(
            "probe_success", "1 if the latest check succeeded.", ["target"], registry=registry
        )
        self.duration = Gauge(
            "probe_duration_seconds",
            "Duration of the latest health check.",
            ["target"],
            registry=registry,
        )
        self.status_code = Gauge(
            "probe_http_status_code",
            "HTTP status of the latest health check; 0 when no response came.",
            ["target"],
            registry=registry,
        )
        self.phase = Gauge(
            "probe_http_duration_seconds",
            "Duration of each phase of the latest health check.",
            ["target", "phase"],
            registry=registry,
        )
        self.cert_expiry = Gauge(
            "probe_ssl_earliest_cert_expiry",
            "Expiry of the target's certificate, unix seconds.",
            ["target"],
            registry=registry,
        )
        self.results = Counter(
            "vigil_probe_results",
            "Checks completed, by outcome: ok or the error kind.",
            ["target", "outcome"],
            registry=registry,
        )
        self.published = Counter(
            "vigil_probe_results_published",
            "Results acknowledged by the broker.",
            registry=registry,
        )
        self.buffer_depth = Gauge(
            "vigil_probe_buffer_depth",
            "Results waiting for the broker.",
            registry=registry,
        )
        self.buffer_dropped = Counter(
            "vigil_probe_buffer_dropped",
            "Results dropped because the buffer was full while the broker was away.",
            registry=registry,
        )
        self.broker_connected = Gauge(
            "vigil_probe_broker_connected",
            "1 while connected to the MQTT broker.",
            registry=registry,
        )
        self.skipped = Counter(
            "vigil_probe_checks_skipped",
            "Checks not run: `overrun` (the previous one still running), `confirming` (its slot"
            " taken by a re-check confirming a failure) or `late`.",
            ["target", "reason"],
            registry=registry,
        )
        self.lateness = Histogram(
            "vigil_probe_check_lateness_seconds",
            "How late checks started against their schedule.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )

    def observe(self, result: ProbeResult) -> None:
        """Record one check's result."""
        t = result.target
        self.success.labels(t).set(1 if result.ok else 0)
        self.duration.labels(t).set(result.duration_ms / 1000.0)
        self.status_code.labels(t).set(result.status_code or 0)
        for phase, ms in result.phases.model_dump().items():
            if ms is not None:
                self.phase.labels(t, phase).set(ms / 1000.0)
        if result.tls_not_after is not None:
            self.cert_expiry.labels(t).set(result.tls_not_after)
        self.results.labels(t, "ok" if result.ok else str(result.error_kind)).inc()
