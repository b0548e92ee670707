"""The probe's Prometheus metrics, on a registry it is given.

Per-target gauges use blackbox_exporter's names so existing dashboards and alerts carry over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wire.result import Phases, ProbeResult


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
            "Checks completed, by outcome: ok, the error kind, or inconclusive (probe-side error).",
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
        self.refused = Counter(
            "vigil_probe_results_refused",
            "Results the broker refused (an MQTT 5 PUBACK with a failure reason code, such as"
            " `Not authorized` from an ACL): dropped, not sent again.",
            ["reason"],
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
            " taken by a re-check confirming a failure), `late`, or `overload` (the event loop has"
            " been waking checks late on average: more than the probe's CPU can run).",
            ["target", "reason"],
            registry=registry,
        )
        self.lateness = Histogram(
            "vigil_probe_check_lateness_seconds",
            "How late checks started against their schedule.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )

        # Each target's children, looked up once: `labels()` takes a lock and builds a key
        # every call, eight calls a check. Made at the first result, as `labels()` would.
        self._children: dict[str, _TargetChildren] = {}

    def _of(self, target: str) -> _TargetChildren:
        children = self._children.get(target)
        if children is None:
            children = self._children[target] = _TargetChildren(
                success=self.success.labels(target),
                duration=self.duration.labels(target),
                status_code=self.status_code.labels(target),
                ok=self.results.labels(target, "ok"),
            )
        return children

    def observe(self, result: ProbeResult) -> None:
        """Record one check's result."""
        t = result.target
        children = self._of(t)
        if result.inconclusive:
            # The probe's own failure says nothing about the target: counted apart, and
            # probe_success keeps what the last real check said.
            self.results.labels(t, "inconclusive").inc()
            return
        children.success.set(1 if result.ok else 0)
        children.duration.set(result.duration_ms / 1000.0)
        children.status_code.set(result.status_code or 0)
        phases = result.phases
        for phase in PHASES:
            ms = getattr(phases, phase)
            if ms is not None:
                child = children.phases.get(phase)
                if child is None:
                    child = children.phases[phase] = self.phase.labels(t, phase)
                child.set(ms / 1000.0)
        if result.tls_not_after is not None:
            self.cert_expiry.labels(t).set(result.tls_not_after)
        if result.ok:
            children.ok.inc()
        else:
            self.results.labels(t, str(result.error_kind)).inc()


# Phases in the order of the wire model's fields, as `model_dump()` gave them.
PHASES = tuple(Phases.model_fields)


@dataclass
class _TargetChildren:
    success: Gauge
    duration: Gauge
    status_code: Gauge
    ok: Counter
    phases: dict[str, Gauge] = field(default_factory=dict)
