"""Wiring: builds the aggregator from its config and owns start, the clock tick and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from aggregator.alertmanager import ConsoleSink, Outcome, PeerSender, auth_headers
from aggregator.alerts import AlertBook, AlertSettings, desired_alerts
from aggregator.config import AggregatorConfig
from aggregator.http import Deps, Readiness, make_app
from aggregator.ingest import Rejected, decode
from aggregator.metrics import AggregatorMetrics, SeriesStore
from aggregator.mqtt import Subscriber
from aggregator.rules import Applied, Engine, Transition
from aggregator.state import StateRecord
from runtime.config import parse_listen
from runtime.service import until_stopped_or_crashed
from wire.result import Presence, ProbeResult
from wire.topics import state_topic

log = logging.getLogger("vigil.aggregator")

TICK_SECONDS = 1.0
# Retained messages come right after each SUBACK; this long without one means all are in.
RETAINED_SETTLE_SECONDS = 1.0
# Transitions that change what the state record says.
RECORDED_KINDS = frozenset({"verdict", "quorum", "region", "version_skew"})


class Aggregator:
    """Everything between a received message and a transition, without I/O of its own."""

    def __init__(
        self,
        config: AggregatorConfig,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        publish_state: Callable[[str, bytes], None] = lambda _t, _p: None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.engine = Engine(
            config.regions,
            config.rule_for,
            default_interval=config.default_interval,
            forget_after=config.forget_after,
        )
        self.store = SeriesStore(config.history)
        self.registry = registry
        self.metrics = AggregatorMetrics(registry, self.engine, self.store)
        self.readiness = Readiness()
        self.publish_state = publish_state
        am = config.alertmanager
        host, port = parse_listen(config.listen)
        if host in ("0.0.0.0", "::"):  # noqa: S104 - listening on all; people need a name
            host = socket.gethostname()
        self.alert_settings = AlertSettings(
            labels=am.labels,
            runbook_url=am.runbook_url,
            external_url=am.external_url or f"http://{host}:{port}",
        )
        self.alert_book = AlertBook(am.resend_interval, am.resolved_retention)
        # Where alert payloads go: the Alertmanager peers, or the log.
        self.send_alerts: Callable[[list[dict[str, Any]]], None] = ConsoleSink(clock).enqueue
        # Called with every batch of transitions once verdicts are live.
        self.listeners: list[Callable[[list[Transition]], None]] = []
        self._regions = frozenset(config.regions)
        self._subscribed_at: float | None = None
        self._last_retained = 0.0
        self._rejections_logged: dict[str, float] = {}

    def http_deps(self) -> Deps:
        """What the HTTP handlers read, with the API tokens loaded.

        Raises:
            ConfigError: the tokens file cannot be read.
        """
        return Deps(
            engine=self.engine,
            store=self.store,
            alerts=self.alert_book,
            readiness=self.readiness,
            registry=self.registry,
            rule_for=self.config.rule_for,
            clock=self.clock,
            tokens=self.config.api.all_tokens(),
            protect_probes=self.config.api.protect_probes,
        )

    # -- input ----------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, retain: bool) -> None:
        """Take one MQTT message; never raises for anything a publisher can send."""
        now = self.clock()
        if retain:
            self._last_retained = now
        decoded = decode(
            topic, payload, regions=self._regions, now=now, max_skew=self.config.max_clock_skew
        )
        if isinstance(decoded, Rejected):
            self._reject(topic, decoded)
        elif isinstance(decoded, ProbeResult):
            self.metrics.received.labels(decoded.region).inc()
            applied = self.engine.apply_result(decoded, now)
            if applied is not Applied.APPLIED:
                self.metrics.ignored.labels(applied.value).inc()
                return
            self.store.observe(decoded)
            if self.readiness.loaded:
                self._emit(self.engine.evaluate(decoded.target, now), now)
        elif isinstance(decoded, Presence):
            transitions = self.engine.apply_presence(decoded, now)
            if self.readiness.loaded:
                self._emit(transitions, now)
        elif not self.readiness.loaded:
            # State records matter only to rebuild verdicts at start; later, a replica's
            # records describe the same results this process already judged.
            self.engine.restore(decoded.restored())

    def _reject(self, topic: str, rejected: Rejected) -> None:
        self.metrics.rejected.labels(rejected.reason.value).inc()
        now = time.monotonic()
        # A hostile publisher must not turn into a log flood: one line per reason per second.
        if now - self._rejections_logged.get(rejected.reason, -1e9) >= 1.0:
            self._rejections_logged[rejected.reason] = now
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
        """Follow the broker connection (readiness and metrics)."""
        self.readiness.connected = connected
        self.metrics.connected.set(1 if connected else 0)

    def tick(self, subscribed: bool) -> None:
        """Advance the clock: finish warm-up, re-judge staleness, forget silent targets."""
        now = self.clock()
        if not self.readiness.loaded:
            if not subscribed:
                return
            if self._subscribed_at is None:
                self._subscribed_at = now
            waited = now - self._subscribed_at
            settled = (
                waited >= RETAINED_SETTLE_SECONDS
                and now - self._last_retained >= RETAINED_SETTLE_SECONDS
            )
            if not settled and waited < self.config.startup_grace:
                return
            self.readiness.loaded = True
            self.metrics.ready.set(1)
            transitions = self.engine.evaluate_all(now)
            log.info(
                "state_loaded",
                extra={"targets": len(self.engine.targets), "after_s": round(waited, 2)},
            )
            # Re-record every target, so the retained records reflect this process's view.
            for name in self.engine.targets:
                self._record(name, now)
            self._emit(transitions, now, record=False, alert=False)
            self._alert(now)
            return
        self._emit(self.engine.evaluate_all(now), now, alert=False)
        for name in self.engine.forget(now):
            self.store.forget(name)
            log.info("target_forgotten", extra={"target": name})
        # Once per tick, changed or not: resends fall due with time.
        self._alert(now)

    # -- output ---------------------------------------------------------------------------

    def _record(self, target: str, now: float) -> None:
        state = self.engine.targets.get(target)
        if state is not None:
            record = StateRecord.of(state, now, self.config.client_id)
            self.publish_state(state_topic(target), record.to_json())

    def _emit(
        self, transitions: list[Transition], now: float, *, record: bool = True, alert: bool = True
    ) -> None:
        if not transitions:
            return
        changed: set[str] = set()
        for t in transitions:
            self.metrics.transitions.labels(t.kind).inc()
            log.info("transition", extra=_describe(t))
            if t.target is not None and t.kind in RECORDED_KINDS:
                changed.add(t.target)
        if record:
            for target in changed:
                self._record(target, now)
        for listener in self.listeners:
            listener(transitions)
        if alert:
            # At once, not at the next tick: detection latency is what a pager is for.
            self._alert(now)

    def _alert(self, now: float) -> None:
        if not self.readiness.loaded:
            return
        payloads = self.alert_book.update(
            desired_alerts(self.engine, now, self.alert_settings), now
        )
        if payloads:
            self.send_alerts(payloads)
        for name, count in self.alert_book.firing().items():
            self.metrics.alerts_firing.labels(name).set(count)


def _describe(t: Transition) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": t.kind, "old": t.old, "new": t.new, "since": round(t.since, 3)}
    if t.target is not None:
        doc["target"] = t.target
    if t.region is not None:
        doc["region"] = t.region
    if t.evaluation is not None and t.kind in ("verdict", "quorum"):
        ev = t.evaluation
        doc["failing"] = sorted(ev.failing)
        doc["stale"] = sorted(ev.stale)
        doc["quorum_degraded"] = ev.quorum_degraded
        doc["errors"] = {
            r.region: f"{r.error_kind}: {r.error} (x{r.consecutive_failures})"
            for r in ev.regions
            if r.failing
        }
    return doc


def alert_senders(
    config: AggregatorConfig, session: aiohttp.ClientSession, agg: Aggregator
) -> list[PeerSender]:
    """One sender per Alertmanager peer, wired to `agg`; none means alerts go to the log.

    Raises:
        ConfigError: a secret file cannot be read.
    """
    am = config.alertmanager
    if not am.urls:
        log.info("alerts_to_log", extra={"reason": "no alertmanager.urls configured"})
        return []
    m = agg.metrics

    def posted(url: str, outcome: Outcome, seconds: float) -> None:
        m.am_posts.labels(url, outcome.value).inc()
        m.am_latency.labels(url).observe(seconds)

    headers = auth_headers(am)
    senders = [
        PeerSender(
            url,
            session,
            am,
            headers=headers,
            on_post=posted,
            on_drop=lambda u: m.am_dropped.labels(u).inc(),
        )
        for url in am.urls
    ]
    for sender in senders:
        m.am_queue.labels(sender.url).set_function(sender.__len__)

    def fan_out(payloads: list[dict[str, Any]]) -> None:
        for sender in senders:
            sender.enqueue(payloads)

    agg.send_alerts = fan_out
    return senders


async def run_aggregator(
    config: AggregatorConfig,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    on_listening: Callable[[int], None] = lambda _port: None,
) -> int:
    """Run until `stop` is set; returns the exit code."""
    registry = registry if registry is not None else CollectorRegistry()
    agg = Aggregator(config, registry)
    subscriber = Subscriber(
        config.mqtt,
        agg.handle,
        client_id=config.client_id,
        session_expiry=config.session_expiry,
        subscribe_timeout=config.subscribe_timeout,
        on_connected=agg.set_connected,
    )
    agg.publish_state = subscriber.publish_state
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    senders = alert_senders(config, session, agg)

    runner = web.AppRunner(make_app(agg.http_deps()), access_log=None)
    await runner.setup()
    host, port = parse_listen(config.listen)
    await web.TCPSite(runner, host, port).start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    on_listening(bound)
    log.info(
        "aggregator_started",
        extra={
            "regions": config.regions,
            "listen": f"{host}:{bound}",
            "client_id": config.client_id,
        },
    )

    async def ticking() -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                agg.tick(subscriber.subscribed.is_set())
            except Exception:  # a bug in one tick must not stop the clock
                log.exception("tick_crashed")

    tasks = [asyncio.create_task(subscriber.run()), asyncio.create_task(ticking())]
    tasks += [asyncio.create_task(sender.run()) for sender in senders]
    code = await until_stopped_or_crashed(stop, tasks, log)
    log.info("aggregator_stopping")
    for task in tasks:
        task.cancel()
    for task in tasks:
        # A crashed task's error was logged by until_stopped_or_crashed.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
    await runner.cleanup()
    await session.close()
    log.info("aggregator_stopped")
    return code
