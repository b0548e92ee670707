"""The aggregator's Prometheus metrics, on a registry it is given.

Per (target, region) series are produced at scrape time from the engine's state and a
compact per-series store, rather than as prometheus_client children: at 10,000 targets x 3
regions that keeps memory per series small and the per-result path free of label lookups.
Dropping a target from the engine and the store drops its series, so cardinality follows
the live targets.

Two renderings of the same series: `EngineCollector.collect` builds prometheus_client
families, for anything that reads the registry (`get_sample_value`, other exporters);
`/metrics` uses `AggregatorMetrics.exposition`, which writes the per-target lines as text
directly and a slice at a time, so the event loop runs between slices. At 10,000 targets x
3 regions the generic family path took seconds of loop time per scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from aggregator.config import LatencyHistograms
from aggregator.core.history import LATENCY_BUCKETS, Series, SeriesStore
from aggregator.core.rules import Engine, OnTargetError, TargetSnapshot
from runtime.logs import Throttle
from wire.state import Verdict

log = logging.getLogger("vigil.aggregator")

# Loop time one step of `/metrics` rendering may take before it lets the loop run: well
# under the 50 ms a deciding result may wait behind a scrape.
SLICE_SECONDS = 0.005
# Targets whose lines go into one piece of the response (a few hundred KB without the
# histograms): the join and encode of a piece is one step too.
TARGETS_PER_PIECE = 500
# Samples a (target, region) adds with the latency histogram: its buckets, +Inf, _sum and
# _count.
HISTOGRAM_SAMPLES = len(LATENCY_BUCKETS) + 3


@dataclass(frozen=True)
class Family:
    """One engine-derived metric family: its name, type, help and label names."""

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()

    def empty(self) -> Metric:
        """A prometheus_client family of this type, without samples."""
        if self.kind == "counter":
            return self.counter()
        if self.kind == "histogram":
            return self.histogram()
        return self.gauge()

    def gauge(self) -> GaugeMetricFamily:
        """An empty gauge family to add samples to."""
        assert self.kind == "gauge", self.name
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))

    def counter(self) -> CounterMetricFamily:
        """An empty counter family to add samples to."""
        assert self.kind == "counter", self.name
        return CounterMetricFamily(self.name, self.help, labels=list(self.labels))

    def histogram(self) -> HistogramMetricFamily:
        """An empty histogram family to add samples to."""
        assert self.kind == "histogram", self.name
        return HistogramMetricFamily(self.name, self.help, labels=list(self.labels))


UP = Family("vigil_target_up", "gauge", "1 up or degraded, 0 down.", ("target",))
VERDICT = Family(
    "vigil_target_verdict", "gauge", "1 for the target's current verdict.", ("target", "verdict")
)
QUORUM_DEGRADED = Family(
    "vigil_target_quorum_degraded",
    "gauge",
    "1 while `down` rests on a degraded quorum (some regions stale).",
    ("target",),
)
VERSION_SKEW = Family(
    "vigil_target_version_skew",
    "gauge",
    "1 while fresh regions disagree on the version.",
    ("target",),
)
REGION_FAILING = Family(
    "vigil_region_failing", "gauge", "1 while the region counts as failing.", ("target", "region")
)
STREAK = Family(
    "vigil_consecutive_failures",
    "gauge",
    "The region's current failure streak.",
    ("target", "region"),
)
SUCCESS = Family(
    "probe_success", "gauge", "1 if the region's latest check passed.", ("target", "region")
)
VERSION = Family(
    "vigil_target_version_info",
    "gauge",
    "The version each region last saw.",
    ("target", "region", "version"),
)
LAST_RESULT = Family(
    "vigil_last_result_timestamp_seconds",
    "gauge",
    "When the region's latest check started.",
    ("target", "region"),
)
REGION_STALE = Family(
    "vigil_region_stale",
    "gauge",
    "1 while a region's probe is offline or all its views stale.",
    ("region",),
)
LATENCY = Family(
    "vigil_probe_latency_seconds",
    "histogram",
    "Health check duration as each region saw it.",
    ("target", "region"),
)
RESULTS = Family(
    "vigil_probe_results",
    "counter",
    "Results applied, by outcome: ok or the error kind.",
    ("target", "region", "outcome"),
)
TARGETS = Family("vigil_targets", "gauge", "Targets the aggregator holds.")
REFUSED = Family(
    "vigil_targets_refused",
    "counter",
    "Target reports refused by limits.max_targets or max_targets_per_region, by region "
    '("" for state records).',
    ("region",),
)
OMITTED = Family(
    "vigil_metrics_targets_omitted",
    "gauge",
    "Targets whose series were left out of this scrape by limits.max_series.",
)
# The families built from each target's state, in the order they are exposed.
TARGET_FAMILIES = (
    UP,
    VERDICT,
    QUORUM_DEGRADED,
    VERSION_SKEW,
    REGION_FAILING,
    STREAK,
    SUCCESS,
    VERSION,
    LAST_RESULT,
)


class _Families(Collector):
    """A fixed list of families, for prometheus_client's text encoder."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _text(families: Iterable[Metric]) -> str:
    """Families in the text format 0.0.4, by prometheus_client's own encoder."""
    return generate_latest(_Families(families)).decode()


# A sample value as prometheus_client writes it (Go's float formatting); untyped there.
value_text: Callable[[float], str] = floatToGoString
# Counts as value_text writes them, looked up: most samples are small counts.
SMALL_COUNTS = tuple(f"{n}.0" for n in range(4096))
# Each family's HELP and TYPE lines, exactly as prometheus_client writes them.
HEADERS = {f.name: _text([f.empty()]) for f in (*TARGET_FAMILIES, LATENCY, RESULTS)}
ONE, ZERO = "1.0", "0.0"
VERDICTS = tuple((v, v.value) for v in Verdict)
# `le` as the family path writes it (repr of the bound), then the overflow bucket.
BUCKET_LE = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")


def escape(value: str) -> str:
    """A label value escaped for the text format: backslash, double quote, newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def target_lines(
    state: TargetSnapshot, series: Mapping[str, Series], histograms: bool
) -> tuple[str, ...]:
    """One target's sample lines, one string per family: TARGET_FAMILIES, LATENCY, RESULTS.

    Labels in sorted order and values as prometheus_client writes them (timestamps aside:
    repr), so the text parses to what `EngineCollector.collect` gives.
    """
    go = value_text
    small, n_small = SMALL_COUNTS, len(SMALL_COUNTS)
    t = escape(state.name)
    up = verdicts = degraded = skew = ""
    if state.evaluation is not None:
        current = state.verdict
        if current is not Verdict.UNKNOWN:
            up = f'vigil_target_up{{target="{t}"}} {ZERO if current is Verdict.DOWN else ONE}\n'
        verdicts = "".join(
            f'vigil_target_verdict{{target="{t}",verdict="{value}"}} '
            f"{ONE if current is v else ZERO}\n"
            for v, value in VERDICTS
        )
        degraded = (
            f'vigil_target_quorum_degraded{{target="{t}"}} '
            f"{ONE if state.quorum_degraded else ZERO}\n"
        )
        skew = f'vigil_target_version_skew{{target="{t}"}} {ONE if state.version_skew else ZERO}\n'
    failing = streak = success = version = last = ""
    for region, view in state.regions.items():
        r = escape(region)
        labels = f'{{region="{r}",target="{t}"}} '
        failing += f"vigil_region_failing{labels}{ONE if view.failing else ZERO}\n"
        n = view.consecutive_failures
        streak += f"vigil_consecutive_failures{labels}{small[n] if 0 <= n < n_small else go(n)}\n"
        success += f"probe_success{labels}{ONE if view.ok else ZERO}\n"
        # repr, not Go's exponent form (1.79e+09): the same number, a third of the cost.
        last += f"vigil_last_result_timestamp_seconds{labels}{view.started_at!r}\n"
        if view.version is not None:
            version += (
                f'vigil_target_version_info{{region="{r}",target="{t}",'
                f'version="{escape(view.version)}"}} 1.0\n'
            )
    latency = results = ""
    for region, s in series.items():
        r = escape(region)
        tail = f'region="{r}",target="{t}"}} '
        if histograms:
            cumulative = 0
            for le, count in zip(BUCKET_LE, s.buckets, strict=True):
                cumulative += count
                value = small[cumulative] if cumulative < n_small else go(cumulative)
                latency += f'vigil_probe_latency_seconds_bucket{{le="{le}",{tail}{value}\n'
            latency += (
                f"vigil_probe_latency_seconds_count{{{tail}{value}\n"
                f"vigil_probe_latency_seconds_sum{{{tail}{go(s.latency_sum)}\n"
            )
        for outcome, count in s.outcomes.items():
            # Outcomes are Vigil's own words (ok, the error kinds): nothing to escape.
            value = small[count] if count < n_small else go(count)
            results += f'vigil_probe_results_total{{outcome="{outcome}",{tail}{value}\n'
    return (up, verdicts, degraded, skew, failing, streak, success, version, last, latency, results)


class _SeriesBudget:
    """What is left of limits.max_series in one scrape, and the targets that did not fit."""

    def __init__(self, limit: int | None, store: SeriesStore, histograms: bool) -> None:
        self.left = limit
        self.omitted = 0
        self._store = store
        self._per_pair = HISTOGRAM_SAMPLES if histograms else 0

    def admit(self, state: TargetSnapshot) -> bool:
        """Whether `state`'s series fit; their samples are taken off the budget if so.

        Oldest targets first (the engine keeps arrival order): a flood of new names is what
        gets left out, not the fleet that was there before it.
        """
        if self.left is None:
            return True
        # Its own series, each region's, and its history's.
        pairs = self._store.series.get(state.name, {}).values()
        cost = (
            4
            + len(Verdict)
            + 5 * len(state.regions)
            + sum(self._per_pair + len(s.outcomes) for s in pairs)
        )
        if cost > self.left:
            self.omitted += 1
            return False
        self.left -= cost
        return True


class EngineCollector(Collector):
    """Produces per-target and per-region series from the engine at scrape time."""

    def __init__(
        self,
        engine: Engine,
        store: SeriesStore,
        on_error: OnTargetError | None = None,
        clock: Callable[[], float] = time.time,
        max_series: int | None = None,
        *,
        latency_histograms: LatencyHistograms = "auto",
        histogram_max_pairs: int = 3000,
    ) -> None:
        self._engine = engine
        self._store = store
        self._on_error = on_error
        self._clock = clock
        self._max_series = max_series
        self._histogram_mode = latency_histograms
        self._histogram_max_pairs = histogram_max_pairs
        self._log_omitted = Throttle(60.0)

    def histograms(self) -> bool:
        """Whether this scrape has the per-pair latency histograms (`metrics:` in the config)."""
        if self._histogram_mode == "auto":
            pairs = sum(len(by_region) for by_region in self._store.series.values())
            return pairs <= self._histogram_max_pairs
        return self._histogram_mode == "on"

    def collect(self) -> Iterator[Metric]:
        """Yield every engine-derived family, as prometheus_client families."""
        e = self._engine
        histograms = self.histograms()
        budget = _SeriesBudget(self._max_series, self._store, histograms)
        up, verdict, degraded_q, skew, failing, streak, success, version, last = (
            f.gauge() for f in TARGET_FAMILIES
        )
        exported: set[str] = set()
        for state in e.snapshots():
            name = state.name
            if not budget.admit(state):
                continue
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
        yield self._stale()

        latency = LATENCY.histogram()
        results = RESULTS.counter()
        for name, by_region in self._store.series.items():
            if name not in exported:
                continue
            for region, s in by_region.items():
                if histograms:
                    cumulative, buckets = 0, []
                    for le, count in zip(BUCKET_LE, s.buckets, strict=True):
                        cumulative += count
                        buckets.append((le, float(cumulative)))
                    latency.add_metric([name, region], buckets, s.latency_sum)
                for outcome, count in s.outcomes.items():
                    results.add_metric([name, region, outcome], float(count))
        if histograms:
            yield latency
        yield results
        yield from self._totals(budget.omitted)

    def exposition(self, slice_seconds: float = SLICE_SECONDS) -> Iterator[str]:
        """The same series as `collect`, in the text format 0.0.4, built a slice at a time.

        Each item is one bounded step of work (about `slice_seconds` at most): a piece of the
        text, or "" when a slice of targets was read and nothing is ready to send yet. The
        caller lets the event loop run between items; that is why every target is looked up
        again by name: between slices the loop may have changed or forgotten it. Each
        target's lines are read in one step, so they agree with each other.

        A target whose lines cannot be built is reported to `on_error` and left out whole
        (without `on_error`, the error propagates).
        """
        e = self._engine
        histograms = self.histograms()
        budget = _SeriesBudget(self._max_series, self._store, histograms)
        store = self._store.series
        # Arrival order, fixed for this scrape: the order the budget is spent in.
        names = [state.name for state in e.snapshots()]
        lines: list[list[str]] = [[] for _ in range(len(TARGET_FAMILIES) + 2)]
        clock = time.perf_counter
        deadline = clock() + slice_seconds
        for name in names:
            if clock() >= deadline:
                yield ""
                deadline = clock() + slice_seconds
            state = e.snapshot(name)
            if state is None or not budget.admit(state):
                continue
            try:
                text = target_lines(state, store.get(name, {}), histograms)
            except Exception as exc:  # one target's series, never the whole scrape
                if self._on_error is None:
                    raise
                self._on_error(name, exc)
                continue
            for parts, part in zip(lines, text, strict=True):
                if part:
                    parts.append(part)
        *per_target, latency, results = lines
        for family, parts in zip(TARGET_FAMILIES, per_target, strict=True):
            yield from _pieces(HEADERS[family.name], parts)
        yield _text([self._stale()])
        if histograms:
            yield from _pieces(HEADERS[LATENCY.name], latency)
        yield from _pieces(HEADERS[RESULTS.name], results)
        yield _text(self._totals(budget.omitted))

    def _stale(self) -> Metric:
        e = self._engine
        now = self._clock()
        stale = REGION_STALE.gauge()
        for region in e.regions:
            stale.add_metric([region], 1.0 if e.region_stale(region, now) else 0.0)
        return stale

    def _totals(self, omitted: int) -> list[Metric]:
        """The counts over all targets, and how many this scrape left out (logged)."""
        e = self._engine
        held = TARGETS.gauge()
        held.add_metric([], float(len(e)))
        refused = REFUSED.counter()
        for region, n in sorted(e.refused.items()):
            refused.add_metric([region], float(n))
        left_out = OMITTED.gauge()
        left_out.add_metric([], float(omitted))
        if omitted and self._log_omitted.ready("series"):
            log.warning(
                "metrics_series_capped",
                extra={"omitted_targets": omitted, "max_series": self._max_series},
            )
        return [held, refused, left_out]


def _pieces(header: str, parts: list[str]) -> Iterator[str]:
    """A family's text in pieces of TARGETS_PER_PIECE targets, the header in the first."""
    yield header + "".join(parts[:TARGETS_PER_PIECE])
    for i in range(TARGETS_PER_PIECE, len(parts), TARGETS_PER_PIECE):
        yield "".join(parts[i : i + TARGETS_PER_PIECE])


class _Own(Collector):
    """The aggregator's own metrics, as one collector on the registry it was given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class AggregatorMetrics:
    """The aggregator's own counters, plus the engine collector.

    Both are on the `registry` given, for anything that reads it. The own counters live on a
    registry of their own, registered there as one collector, so `exposition` can render
    them with prometheus_client and the engine's series with the direct renderer.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        engine: Engine,
        store: SeriesStore,
        clock: Callable[[], float] = time.time,
        *,
        max_series: int | None = None,
        latency_histograms: LatencyHistograms = "auto",
        histogram_max_pairs: int = 3000,
    ) -> None:
        self._log_failed = Throttle(60.0)
        own = self._own = CollectorRegistry()
        self.engine_series = EngineCollector(
            engine,
            store,
            self._metrics_failed,
            clock,
            max_series=max_series,
            latency_histograms=latency_histograms,
            histogram_max_pairs=histogram_max_pairs,
        )
        self.received = Counter(
            "vigil_results_received",
            "Result messages received, by region of the topic.",
            ["region"],
            registry=own,
        )
        self.rejected = Counter(
            "vigil_results_rejected",
            "Messages dropped as invalid, by reason.",
            ["reason"],
            registry=own,
        )
        self.ignored = Counter(
            "vigil_results_ignored",
            "Valid results that changed nothing: duplicate, older, or from before their target"
            " was forgotten.",
            ["reason"],
            registry=own,
        )
        self.transitions = Counter(
            "vigil_transitions", "State changes, by kind.", ["kind"], registry=own
        )
        self.connected = Gauge(
            "vigil_broker_connected", "1 while connected to the MQTT broker.", registry=own
        )
        self.alerts_firing = Gauge(
            "vigil_alerts_firing", "Alerts firing, by alertname.", ["alertname"], registry=own
        )
        self.am_posts = Counter(
            "vigil_alertmanager_posts",
            "POSTs to each Alertmanager: success, retry (5xx, timeout, connection) or rejected.",
            ["alertmanager", "outcome"],
            registry=own,
        )
        self.am_queue = Gauge(
            "vigil_alertmanager_queue_depth",
            "Alert updates waiting for each Alertmanager.",
            ["alertmanager"],
            registry=own,
        )
        self.am_dropped = Counter(
            "vigil_alertmanager_dropped",
            "Alert updates dropped because a peer's queue was full.",
            ["alertmanager"],
            registry=own,
        )
        self.am_latency = Histogram(
            "vigil_alertmanager_post_duration_seconds",
            "Time to POST a batch of alerts to each Alertmanager.",
            ["alertmanager"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=own,
        )
        self.clock_skew = Gauge(
            "vigil_probe_clock_skew_seconds",
            "Arrival time minus the end of the check by the probe's clock, latest live result: "
            "positive when the probe's clock is behind (plus the delivery delay).",
            ["region", "probe_id"],
            registry=own,
        )
        self.evaluation_errors = Counter(
            "vigil_evaluation_errors",
            "Errors handling one target, by stage (evaluate, record, alerts, metrics, views, "
            "history); "
            "the other targets went on.",
            ["stage"],
            registry=own,
        )
        self.http_shed = Counter(
            "vigil_http_connections_shed",
            "Connections the HTTP listener closed: header_timeout (no complete request head in "
            "time), evicted (oldest still waiting for its head, at max_connections) or "
            "evicted_idle (the quietest connection, at max_connections with none waiting).",
            ["reason"],
            registry=own,
        )
        for reason in ("header_timeout", "evicted", "evicted_idle"):
            self.http_shed.labels(reason)
        self.history_write_errors = Counter(
            "vigil_history_write_errors",
            "Writes to the history database that failed, by what (rollups, incidents, deploys, "
            "maintenance, announcement, prune); verdicts and alerts never depend on them.",
            ["what"],
            registry=own,
        )
        self.history_dropped = Counter(
            "vigil_history_dropped_rows",
            "Rows not written to the history database because its write queue was full "
            "(storage.max_pending): the disk is slower than the results.",
            registry=own,
        )
        self.history_pending = Gauge(
            "vigil_history_pending_rows",
            "Rows queued for the history database's writer.",
            registry=own,
        )
        self.ready = Gauge(
            "vigil_aggregator_ready",
            "1 once retained state is loaded and verdicts are live.",
            registry=own,
        )
        registry.register(_Own(own))
        registry.register(self.engine_series)

    def exposition(self) -> Iterator[str]:
        """`/metrics` in the text format 0.0.4, in steps: see `EngineCollector.exposition`.

        The engine's series first, so errors counted while building them are in this scrape.
        """
        yield from self.engine_series.exposition()
        yield generate_latest(self._own).decode()

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
