"""The aggregator's pipeline: a message in, judged, recorded and alerted on; the clock tick.

Constructed once by `app.py` with every collaborator as an argument: the engine and history it
folds results into, the metrics it counts on, where alert payloads and state records go, and
the clock. No I/O of its own: `send_alerts` and `publish_state` only queue.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from aggregator.core.alerts import AlertBook, AlertSettings, DesiredAlerts, restored_alerts
from aggregator.core.history import SeriesStore
from aggregator.core.ingest import Rejected, decode
from aggregator.core.recording import NoHistory, Recorder
from aggregator.core.rules import (
    RECORDED,
    Applied,
    Change,
    Engine,
    OnTargetError,
    Transition,
)
from aggregator.metrics import AggregatorMetrics
from runtime.logs import Throttle
from wire.result import Presence, ProbeResult
from wire.topics import Kind, state_topic, topic_kind

log = logging.getLogger("vigil.aggregator")

# Retained messages come right after each SUBACK; this long without one means all are in.
RETAINED_SETTLE_SECONDS = 1.0

# Targets judged per slice of a tick: a few milliseconds of the event loop at a time.
TICK_SLICE = 500

SendAlerts = Callable[[list[dict[str, Any]]], None]
PublishState = Callable[[str, bytes], None]


class Stage(enum.StrEnum):
    """Where one target's processing failed; the `stage` label of the errors counter."""

    EVALUATE = "evaluate"
    RECORD = "record"
    ALERTS = "alerts"
    METRICS = "metrics"
    VIEWS = "views"
    HISTORY = "history"


@dataclass
class Readiness:
    """What /readyz reports; set as the pipeline connects and loads retained state."""

    connected: bool = False
    loaded: bool = False

    def reason(self) -> str | None:
        """Why the aggregator is not ready, or None when it is."""
        if not self.connected:
            return "not connected to the MQTT broker"
        if not self.loaded:
            return "loading retained state from the broker"
        return None


@dataclass(frozen=True)
class PipelineSettings:
    """The parts of the aggregator's config the pipeline acts on."""

    regions: frozenset[str]
    max_clock_skew: float
    startup_grace: float
    # Names this instance's state subtree (`state_topic`) and is written into each record.
    client_id: str
    # A result that started longer ago than this is rejected as too old to judge by.
    max_result_age: float = float("inf")
    # After a reconnect, how long staleness stays held while the backlog comes in.
    reconnect_grace: float = 20.0
    # Distinct probe ids per region given a clock-skew series.
    max_probes_per_region: int = 64


class Pipeline:
    """Everything between a received message and the alerts it calls for."""

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        engine: Engine,
        store: SeriesStore,
        metrics: AggregatorMetrics,
        alert_book: AlertBook,
        alert_settings: AlertSettings,
        send_alerts: SendAlerts,
        publish_state: PublishState,
        readiness: Readiness,
        clock: Callable[[], float] = time.time,
        on_transitions: Callable[[list[Transition]], None] = lambda _t: None,
        history: Recorder | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._store = store
        self._metrics = metrics
        self._alert_book = alert_book
        self._alert_settings = alert_settings
        self._send_alerts = send_alerts
        self._publish_state = publish_state
        self._readiness = readiness
        self._clock = clock
        self._on_transitions = on_transitions
        self._history: Recorder = history if history is not None else NoHistory()
        self._desired = DesiredAlerts(alert_settings)
        self._subscribed_at: float | None = None
        self._last_retained = 0.0
        # A hostile publisher must not turn into a log flood.
        self._rejections_logged = Throttle(60.0)
        self._errors_logged = Throttle(60.0)
        self._refusals_logged = Throttle(60.0)
        # Probe ids with a clock-skew series, per region, least recently heard first.
        # (Each with its series' child: a label lookup per result is a cost at 10,000/s.)
        self._skew_probes: dict[str, dict[str, Gauge]] = {}
        self._received: dict[str, Counter] = {}

    # -- input ----------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        """Take one MQTT message; never raises for anything a publisher can send."""
        now = self._clock()
        if retain:
            self._last_retained = now
        if not payload and topic_kind(topic) is Kind.STATE:
            return  # a state record deleted (an expired tombstone): nothing to restore
        s = self._settings
        decoded = decode(
            topic,
            payload,
            regions=s.regions,
            now=now,
            max_skew=s.max_clock_skew,
            max_age=s.max_result_age,
        )
        if isinstance(decoded, Rejected):
            self._reject(topic, decoded)
        elif isinstance(decoded, ProbeResult):
            received = self._received.get(decoded.region)
            if received is None:  # regions are configured: at most a handful of children
                received = self._received[decoded.region] = self._metrics.received.labels(
                    decoded.region
                )
            received.inc()
            try:
                applied = self._engine.apply_result(decoded, now)
                if applied is Applied.REFUSED:
                    self._refused(decoded.region, decoded.target)
                    return
                if applied is not Applied.APPLIED:
                    self._metrics.ignored.labels(applied.value).inc()
                    return
                if not retain:
                    # Only new live results say something about the probe's clock; retained,
                    # queued and replayed ones are late by design.
                    self._clock_skew(decoded, now - decoded.ended_at)
                self._store.observe(decoded)
                transitions = (
                    self._engine.evaluate(decoded.target, now)
                    if self._readiness.loaded and self._engine.needs_evaluation(decoded.target)
                    else []
                )
            except Exception as exc:  # isolation: this target's bug, not the pipeline's
                self._target_failed(Stage.EVALUATE)(decoded.target, exc)
                return
            self._emit(transitions, now)
            # After the verdict and its alerts: history never delays or breaks a page. A
            # retained result is the last one a previous process already counted.
            if not retain:
                try:
                    self._history.observe(decoded, now)
                except Exception as exc:
                    self._target_failed(Stage.HISTORY)(decoded.target, exc)
        elif isinstance(decoded, Presence):
            refused = self._engine.refused[decoded.region]
            transitions = self._engine.apply_presence(decoded, now)
            if self._engine.refused[decoded.region] > refused:
                self._refused(decoded.region, None)
            if self._readiness.loaded:
                self._emit(transitions, now)
        elif not self._readiness.loaded:
            # State records (only this instance's: see `aggregator_filters`) matter only to
            # rebuild verdicts at start; later they are this process's own echo.
            self._engine.restore(decoded)
            if decoded.forgotten_at is not None and decoded.target not in self._engine:
                self._store.forget(decoded.target)  # its retained results came first

    def _clock_skew(self, result: ProbeResult, skew: float) -> None:
        # Bounded: a region's credentials could otherwise mint a series per made-up probe id.
        # The least recently heard id gives way (and its series goes), so a new real probe
        # (a redeploy with new ids) always gets one.
        seen = self._skew_probes.setdefault(result.region, {})
        gauge = seen.pop(result.probe_id, None)
        if gauge is None:
            gauge = self._metrics.clock_skew.labels(result.region, result.probe_id)
        seen[result.probe_id] = gauge
        if len(seen) > self._settings.max_probes_per_region:
            oldest = next(iter(seen))
            del seen[oldest]
            with contextlib.suppress(KeyError):
                self._metrics.clock_skew.remove(result.region, oldest)
        gauge.set(skew)

    def _refused(self, region: str, target: str | None) -> None:
        # Counted by the engine (vigil_targets_refused_total); said once a minute per region.
        if self._refusals_logged.ready(region):
            log.warning(
                "targets_refused",
                extra={
                    "region": region,
                    "target": None if target is None else target[:200],
                    "region_targets": self._engine.targets_in(region),
                    "targets": len(self._engine),
                    "reason": "max_targets or max_targets_per_region reached (limits:)",
                },
            )

    def _target_failed(self, stage: Stage) -> OnTargetError:
        def failed(target: str, exc: Exception) -> None:
            self._metrics.evaluation_errors.labels(stage.value).inc()
            # One line per stage and target per minute: a bug must be seen, not flood the log.
            if self._errors_logged.ready(f"{stage}/{target}"):
                log.error(
                    "evaluation_failed",
                    extra={"stage": stage.value, "target": target, "error": repr(exc)},
                    exc_info=exc,
                )

        return failed

    def _reject(self, topic: str, rejected: Rejected) -> None:
        self._metrics.rejected.labels(rejected.reason.value).inc()
        if self._rejections_logged.ready(rejected.reason):
            log.warning(
                "message_rejected",
                extra={
                    "reason": rejected.reason.value,
                    "topic": topic[:200],
                    "detail": rejected.detail,
                },
            )

    # -- time -----------------------------------------------------------------------------

    def set_connected(self, connected: bool) -> None:
        """Follow the broker connection: readiness, metrics, and the engine's hold.

        Cut off from the broker, the aggregator hears nothing: that is not the probes'
        silence, so staleness and `offline` presence are held until it is back and has had
        `reconnect_grace` to catch up.
        """
        now = self._clock()
        if connected:
            self._engine.reconnected(now, self._settings.reconnect_grace)
        elif self._readiness.connected:
            self._engine.cut_off(now)
        self._readiness.connected = connected
        self._metrics.connected.set(1 if connected else 0)

    def tick(self, subscribed: bool) -> None:
        """Advance the clock: finish warm-up, re-judge staleness, forget silent targets."""
        for _ in self.tick_slices(subscribed):
            pass

    def tick_slices(self, subscribed: bool) -> Iterator[None]:
        """`tick`, `TICK_SLICE` targets at a time: yields between slices.

        Judging 10,000 targets takes tens of milliseconds; the caller lets the event loop
        run at each yield, so a deciding result never waits for a whole tick.
        """
        now = self._clock()
        if not self._readiness.loaded:
            self._warm_up(subscribed, now)
            return
        on_error = self._target_failed(Stage.EVALUATE)
        names = self._engine.held()
        for start in range(0, len(names), TICK_SLICE):
            if start:
                yield
                now = self._clock()
            chunk = names[start : start + TICK_SLICE]
            transitions = self._engine.evaluate_all(now, on_error, chunk)
            self._emit(transitions, now, alert=False)
        for name in self._engine.forget(now):
            self._store.forget(name)
            try:
                self._history.forget(name)
            except Exception as exc:  # history never stops the clock
                self._target_failed(Stage.HISTORY)(name, exc)
            # Retained, so a restart does not bring it back from its retained results.
            tombstone = self._engine.tombstone(name, now, self._settings.client_id)
            if tombstone is not None:
                self._publish_state(
                    state_topic(self._settings.client_id, name), tombstone.to_json()
                )
            log.info("target_forgotten", extra={"target": name})
        # Past max_result_age a forgotten target's results are rejected anyway: its retained
        # tombstone is deleted (an empty retained message), so tombstones do not pile up.
        for name in self._engine.expire_tombstones(now - self._settings.max_result_age, now):
            self._publish_state(state_topic(self._settings.client_id, name), b"")
        # Once per tick, changed or not: resends fall due with time.
        self._alert(now)
        history = self._history.tick_slices(now)
        while True:
            try:
                next(history)
            except StopIteration:
                break
            except Exception as exc:  # history never stops the clock
                self._target_failed(Stage.HISTORY)("*", exc)
                break
            yield

    def _warm_up(self, subscribed: bool, now: float) -> None:
        if not subscribed:
            return
        if self._subscribed_at is None:
            self._subscribed_at = now
            self._engine.listening(now)
        waited = now - self._subscribed_at
        settled = (
            waited >= RETAINED_SETTLE_SECONDS
            and now - self._last_retained >= RETAINED_SETTLE_SECONDS
        )
        if not settled and waited < self._settings.startup_grace:
            return
        self._readiness.loaded = True
        self._metrics.ready.set(1)
        # What the last process had firing, so what ended meanwhile is sent resolved.
        self._alert_book.seed(restored_alerts(self._engine, self._alert_settings), now)
        transitions = self._engine.evaluate_all(now, self._target_failed(Stage.EVALUATE))
        try:
            self._history.loaded(self._engine.snapshots(), now)
        except Exception as exc:
            self._target_failed(Stage.HISTORY)("*", exc)
        log.info("state_loaded", extra={"targets": len(self._engine), "after_s": round(waited, 2)})
        # Re-record every target, so the retained records reflect this process's view.
        for name in self._engine.names():
            self._record(name, now)
        self._emit(transitions, now, record=False, alert=False)
        self._alert(now)

    # -- output ---------------------------------------------------------------------------

    def _record(self, target: str, now: float) -> None:
        try:
            record = self._engine.record(target, now, self._settings.client_id)
            payload = record.to_json() if record is not None else None
        except Exception as exc:  # e.g. a value the record's bounds refuse
            self._target_failed(Stage.RECORD)(target, exc)
            return
        if payload is not None:
            self._publish_state(state_topic(self._settings.client_id, target), payload)

    def _emit(
        self, transitions: list[Transition], now: float, *, record: bool = True, alert: bool = True
    ) -> None:
        if not transitions:
            return
        changed: set[str] = set()
        touched: set[str] = set()
        regions = False
        for t in transitions:
            self._metrics.transitions.labels(t.kind.value).inc()
            log.info("transition", extra=describe(t))
            if t.target is not None:
                touched.add(t.target)
                if t.kind in RECORDED:
                    changed.add(t.target)
            # A probe that came or went, or a region going silent, may raise ProbeOffline;
            # one coming back resolves it at the next tick.
            regions = (
                regions or t.kind is Change.PROBE or (t.kind is Change.STALE and t.new == "stale")
            )
        if record:
            for target in changed:
                self._record(target, now)
        self._on_transitions(transitions)
        if alert:
            # At once, not at the next tick: detection latency is what a pager is for. Only
            # the targets that changed: the tick re-judges the rest once a second.
            self._alert(now, touched, regions)
        try:
            self._history.transitions(transitions, now)
        except Exception as exc:
            self._target_failed(Stage.HISTORY)("*", exc)

    def _alert(
        self, now: float, changed: Collection[str] | None = None, regions: bool = False
    ) -> None:
        """Bring the alert book up to date: every target, or only those `changed`."""
        if not self._readiness.loaded:
            return
        on_error = self._target_failed(Stage.ALERTS)
        if changed is None:
            self._desired.refresh(self._engine, now, on_error)
        else:
            self._desired.refresh_targets(self._engine, changed, now, on_error)
            if regions:
                self._desired.refresh_regions(self._engine, now)
        payloads = self._alert_book.update(self._desired.current(), now)
        if payloads:
            self._send_alerts(payloads)
        for name, count in self._alert_book.firing().items():
            self._metrics.alerts_firing.labels(name).set(count)


def describe(t: Transition) -> dict[str, Any]:
    """A transition as log keys."""
    doc: dict[str, Any] = {
        "kind": t.kind.value,
        "old": t.old,
        "new": t.new,
        "since": round(t.since, 3),
    }
    if t.target is not None:
        doc["target"] = t.target
    if t.region is not None:
        doc["region"] = t.region
    if t.evaluation is not None and t.kind in (Change.VERDICT, Change.QUORUM):
        ev = t.evaluation
        doc["failing"] = sorted(ev.failing)
        doc["stale"] = sorted(ev.stale)
        doc["quorum_degraded"] = ev.quorum_degraded
        doc["errors"] = {
            r.region: (
                f"{r.error_kind}: {r.error} (x{r.consecutive_failures})"
                if r.consecutive_failures
                else f"recovering ({r.consecutive_successes} ok)"
            )
            for r in ev.regions
            if r.failing
        }
    return doc
