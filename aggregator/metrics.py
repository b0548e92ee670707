"""The aggregator's Prometheus metrics, on a registry it is given.

Per (target, region) series are produced at scrape time from the engine's state and a
compact per-series store, rather than as prometheus_client children: at 10,000 targets x 3
regions that keeps memory per series small and the per-result path free of label lookups.
Dropping a target from the engine and the store drops its series, so cardinality follows
the live targets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from aggregator.core.history import LATENCY_BUCKETS, SeriesStore
from aggregator.core.rules import Engine, OnTargetError
from runtime.logs import Throttle
from wire.state import Verdict

log = logging.getLogger("vigil.aggregator")


class EngineCollector(Collector):
    """Produces per-target and per-region series from the engine at scrape time."""

    def __init__(
        self,
        engine: Engine,
        store: SeriesStore,
        on_error: OnTargetError | None = None,
        clock: Callable[[], float] = time.time,
        max_series: int | None = None,
    ) -> None:
        self._engine = engine
        self._store = store
        self._on_error = on_error
        self._clock = clock
        self._max_series = max_series
        self._log_omitted = Throttle(60.0)

    def _samples(self, name: str, regions: int) -> int:
        """How many samples a target's series add: its own, each region's, its history's."""
        per_pair = [
            len(LATENCY_BUCKETS) + 3 + len(s.outcomes)
            for s in self._store.series.get(name, {}).values()
        ]
        return 4 + len(Verdict) + 5 * regions + sum(per_pair)

    def collect(self) -> Iterator[Metric]:
        """Yield every engine-derived family."""
        e = self._engine
        up = GaugeMetricFamily("vigil_target_up", "1 up or degraded, 0 down.", labels=["target"])
        verdict = GaugeMetricFamily(
            "vigil_target_verdict",
            "1 for the target's current verdict.",
            labels=["target", "verdict"],
        )
        degraded_q = GaugeMetricFamily(
            "vigil_target_quorum_degraded",
            "1 while `down` rests on a degraded quorum (some regions stale).",
            labels=["target"],
        )
        skew = GaugeMetricFamily(
            "vigil_target_version_skew",
            "1 while fresh regions disagree on the version.",
            labels=["target"],
        )
        failing = GaugeMetricFamily(
            "vigil_region_failing",
            "1 while the region counts as failing.",
            labels=["target", "region"],
        )
        streak = GaugeMetricFamily(
            "vigil_consecutive_failures",
            "The region's current failure streak.",
            labels=["target", "region"],
        )
        success = GaugeMetricFamily(
            "probe_success", "1 if the region's latest check passed.", labels=["target", "region"]
        )
        version = GaugeMetricFamily(
            "vigil_target_version_info",
            "The version each region last saw.",
            labels=["target", "region", "version"],
        )
        last = GaugeMetricFamily(
            "vigil_last_result_timestamp_seconds",
            "When the region's latest check started.",
            labels=["target", "region"],
        )
        exported: set[str] = set()
        budget = self._max_series
        omitted = 0
        for state in e.snapshots():
            name = state.name
            if budget is not None:
                # Oldest targets first (the engine keeps arrival order): a flood of new
                # names is what gets left out, not the fleet that was there before it.
                cost = self._samples(name, len(state.regions))
                if cost > budget:
                    omitted += 1
                    continue
                budget -= cost
            exported.add(name)
            try:
                if state.evaluation is not None:
                    if state.verdict is not Verdict.UNKNOWN:
                        up.add_metric([name], 0.0 if state.verdict is Verdict.DOWN else 1.0)
                    for v in Verdict:
                        verdict.add_metric([name, v.value], 1.0 if state.verdict is v else 0.0)
                    degraded_q.add_metric([name], 1.0 if state.quorum_degraded else 0.0)
                    skew.add_metric([name], 1.0 if state.version_skew else 0.0)
                for region, view in state.regions.items():
                    labels = [name, region]
                    failing.add_metric(labels, 1.0 if view.failing else 0.0)
                    streak.add_metric(labels, float(view.consecutive_failures))
                    success.add_metric(labels, 1.0 if view.ok else 0.0)
                    last.add_metric(labels, view.started_at)
                    if view.version is not None:
                        version.add_metric([name, region, view.version], 1.0)
            except Exception as exc:  # one target's series, never the whole scrape
                if self._on_error is None:
                    raise
                self._on_error(name, exc)
        yield from (up, verdict, degraded_q, skew, failing, streak, success, version, last)

        now = self._clock()
        stale = GaugeMetricFamily(
            "vigil_region_stale",
            "1 while a region's probe is offline or all its views stale.",
            labels=["region"],
        )
        for region in e.regions:
            stale.add_metric([region], 1.0 if e.region_stale(region, now) else 0.0)
        yield stale

        latency = HistogramMetricFamily(
            "vigil_probe_latency_seconds",
            "Health check duration as each region saw it.",
            labels=["target", "region"],
        )
        results = CounterMetricFamily(
            "vigil_probe_results",
            "Results applied, by outcome: ok or the error kind.",
            labels=["target", "region", "outcome"],
        )
        for name, by_region in self._store.series.items():
            if name not in exported:
                continue
            for region, s in by_region.items():
                cumulative, buckets = 0, []
                for bound, count in zip(LATENCY_BUCKETS, s.buckets, strict=False):
                    cumulative += count
                    buckets.append((repr(bound), float(cumulative)))
                cumulative += s.buckets[-1]
                buckets.append(("+Inf", float(cumulative)))
                latency.add_metric([name, region], buckets, s.latency_sum)
                for outcome, count in s.outcomes.items():
                    results.add_metric([name, region, outcome], float(count))
        yield latency
        yield results

        held = GaugeMetricFamily("vigil_targets", "Targets the aggregator holds.")
        held.add_metric([], float(len(e)))
        yield held
        refused = CounterMetricFamily(
            "vigil_targets_refused",
            "Target reports refused by limits.max_targets or max_targets_per_region, by region "
            '("" for state records).',
            labels=["region"],
        )
        for region, n in sorted(e.refused.items()):
            refused.add_metric([region], float(n))
        yield refused
        left_out = GaugeMetricFamily(
            "vigil_metrics_targets_omitted",
            "Targets whose series were left out of this scrape by limits.max_series.",
        )
        left_out.add_metric([], float(omitted))
        yield left_out
        if omitted and self._log_omitted.ready("series"):
            log.warning(
                "metrics_series_capped",
                extra={"omitted_targets": omitted, "max_series": self._max_series},
            )


class AggregatorMetrics:
    """The aggregator's own counters, plus the engine collector."""

    def __init__(
        self,
        registry: CollectorRegistry,
        engine: Engine,
        store: SeriesStore,
        clock: Callable[[], float] = time.time,
        *,
        max_series: int | None = None,
    ) -> None:
        self._log_failed = Throttle(60.0)
        self.received = Counter(
            "vigil_results_received",
            "Result messages received, by region of the topic.",
            ["region"],
            registry=registry,
        )
        self.rejected = Counter(
            "vigil_results_rejected",
            "Messages dropped as invalid, by reason.",
            ["reason"],
            registry=registry,
        )
        self.ignored = Counter(
            "vigil_results_ignored",
            "Valid results that changed nothing: duplicate or older.",
            ["reason"],
            registry=registry,
        )
        self.transitions = Counter(
            "vigil_transitions", "State changes, by kind.", ["kind"], registry=registry
        )
        self.connected = Gauge(
            "vigil_broker_connected", "1 while connected to the MQTT broker.", registry=registry
        )
        self.alerts_firing = Gauge(
            "vigil_alerts_firing", "Alerts firing, by alertname.", ["alertname"], registry=registry
        )
        self.am_posts = Counter(
            "vigil_alertmanager_posts",
            "POSTs to each Alertmanager: success, retry (5xx, timeout, connection) or rejected.",
            ["alertmanager", "outcome"],
            registry=registry,
        )
        self.am_queue = Gauge(
            "vigil_alertmanager_queue_depth",
            "Alert updates waiting for each Alertmanager.",
            ["alertmanager"],
            registry=registry,
        )
        self.am_dropped = Counter(
            "vigil_alertmanager_dropped",
            "Alert updates dropped because a peer's queue was full.",
            ["alertmanager"],
            registry=registry,
        )
        self.am_latency = Histogram(
            "vigil_alertmanager_post_duration_seconds",
            "Time to POST a batch of alerts to each Alertmanager.",
            ["alertmanager"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.clock_skew = Gauge(
            "vigil_probe_clock_skew_seconds",
            "Arrival time minus the end of the check by the probe's clock, latest live result: "
            "positive when the probe's clock is behind (plus the delivery delay).",
            ["region", "probe_id"],
            registry=registry,
        )
        self.evaluation_errors = Counter(
            "vigil_evaluation_errors",
            "Errors handling one target, by stage (evaluate, record, alerts, metrics, views); "
            "the other targets went on.",
            ["stage"],
            registry=registry,
        )
        registry.register(
            EngineCollector(engine, store, self._metrics_failed, clock, max_series=max_series)
        )
        self.http_shed = Counter(
            "vigil_http_connections_shed",
            "Connections the HTTP listener closed: header_timeout (no complete request head in "
            "time), evicted (oldest still waiting for its head, at max_connections) or "
            "evicted_idle (the quietest connection, at max_connections with none waiting).",
            ["reason"],
            registry=registry,
        )
        for reason in ("header_timeout", "evicted", "evicted_idle"):
            self.http_shed.labels(reason)
        self.ready = Gauge(
            "vigil_aggregator_ready",
            "1 once retained state is loaded and verdicts are live.",
            registry=registry,
        )

    def connection_shed(self, reason: str) -> None:
        """Count a connection the HTTP listener closed, by reason."""
        self.http_shed.labels(reason).inc()

    def _metrics_failed(self, target: str, exc: Exception) -> None:
        self._failed("metrics", target, exc)

    def view_failed(self, target: str, exc: Exception) -> None:
        """Count and log a target whose API or page view could not be built."""
        self._failed("views", target, exc)

    def _failed(self, stage: str, target: str, exc: Exception) -> None:
        self.evaluation_errors.labels(stage).inc()
        # Every scrape or page load would log it again: once a minute per stage and target.
        if self._log_failed.ready(f"{stage}/{target}"):
            log.error(
                "evaluation_failed", extra={"stage": stage, "target": target, "error": repr(exc)}
            )
