"""Wiring: builds the aggregator's parts from its config, once, and owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry

from aggregator.config import AggregatorConfig
from aggregator.core.alerts import (
    SERVICE_DOWN,
    SERVICE_REGION_DOWN,
    VERSION_SKEW,
    AlertBook,
    AlertSettings,
)
from aggregator.core.history import SeriesStore
from aggregator.core.pipeline import (
    Pipeline,
    PipelineSettings,
    Readiness,
    SendAlerts,
)
from aggregator.core.rules import Engine, Transition
from aggregator.edges.alertmanager import ConsoleSink, Outcome, PeerSender, auth_headers
from aggregator.edges.http import Deps, make_app
from aggregator.edges.http_history import ExpireSilences, HistoryRoutes, MakeSilences
from aggregator.edges.mqtt import StateOutbox, Subscriber
from aggregator.edges.silences import create_silences, expire_silence
from aggregator.metrics import AggregatorMetrics
from aggregator.recorder import History, HistoryCounters
from runtime.config import parse_listen
from runtime.http import ConnectionLimits, serve
from runtime.service import finish_within, until_stopped_or_crashed

log = logging.getLogger("vigil.aggregator")

TICK_SECONDS = 1.0

# The default stop budget, SIGTERM to exit; a run uses its config's `shutdown_timeout`.
SHUTDOWN_TIMEOUT: float = AggregatorConfig.model_fields["shutdown_timeout"].default


@dataclass
class Aggregator:
    """The aggregator's parts, built from one config; nothing here does I/O on its own."""

    config: AggregatorConfig
    registry: CollectorRegistry
    engine: Engine
    store: SeriesStore
    metrics: AggregatorMetrics
    alert_book: AlertBook
    readiness: Readiness
    outbox: StateOutbox
    pipeline: Pipeline
    senders: list[PeerSender]
    clock: Callable[[], float]
    # None when `storage.path` is not set.
    history: History | None = None
    # Silences a target in every Alertmanager peer, and expires them; None without peers.
    make_silences: MakeSilences | None = None
    expire_silences: ExpireSilences | None = None

    def http_deps(self) -> Deps:
        """What the HTTP handlers read, with the API tokens loaded.

        Raises:
            ConfigError: the tokens file cannot be read.
        """
        tokens = self.config.api.all_tokens()
        return Deps(
            engine=self.engine,
            store=self.store,
            alerts=self.alert_book,
            readiness=self.readiness,
            registry=self.registry,
            rule_for=self.config.rule_for,
            clock=self.clock,
            tokens=tokens,
            protect_probes=self.config.api.protect_probes,
            on_error=self.metrics.view_failed,
            metrics_text=self.metrics.exposition,
            history=HistoryRoutes(
                self.history,
                slo=self.config.slo,
                clock=self.clock,
                verdict_of=self._verdict_of,
                verdicts=self._verdicts,
                make_silences=self.make_silences,
                expire_silences=self.expire_silences,
                changes_allowed=bool(tokens) or is_loopback(self.config.listen),
                regions=self.config.regions,
            ),
            public_badges=self.config.api.public_badges,
            public_page=self.config.api.public_page,
        )

    def _verdicts(self) -> list[tuple[str, str]]:
        # Problems first, then by name: what a customer looks for.
        order = {"down": 0, "degraded": 1, "unknown": 2, "up": 3}
        pairs = [(s.name, s.verdict.value) for s in self.engine.snapshots()]
        return sorted(pairs, key=lambda p: (order.get(p[1], 9), p[0]))

    def _verdict_of(self, target: str) -> str | None:
        snap = self.engine.snapshot(target)
        return None if snap is None else snap.verdict.value


def is_loopback(listen: str) -> bool:
    """Whether `listen` is a loopback address (only this machine can connect)."""
    host, _ = parse_listen(listen)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def alert_settings(config: AggregatorConfig) -> AlertSettings:
    """What every alert carries besides the engine's facts."""
    am = config.alertmanager
    host, port = parse_listen(config.listen)
    if host in ("0.0.0.0", "::"):  # noqa: S104 - listening on all; people need a name
        host = socket.gethostname()
    return AlertSettings(
        labels=am.labels,
        runbook_url=am.runbook_url,
        external_url=am.external_url or f"http://{host}:{port}",
        region_down_for=am.region_down_for,
    )


def alert_senders(
    config: AggregatorConfig, session: aiohttp.ClientSession, metrics: AggregatorMetrics
) -> list[PeerSender]:
    """One sender per Alertmanager peer; none when no peer is configured.

    Raises:
        ConfigError: a secret file cannot be read.
    """
    am = config.alertmanager

    def posted(url: str, outcome: Outcome, seconds: float) -> None:
        metrics.am_posts.labels(url, outcome.value).inc()
        metrics.am_latency.labels(url).observe(seconds)

    headers = auth_headers(am) if am.urls else {}
    senders = [
        PeerSender(
            url,
            session,
            am,
            headers=headers,
            on_post=posted,
            on_drop=lambda u: metrics.am_dropped.labels(u).inc(),
        )
        for url in am.urls
    ]
    for sender in senders:
        metrics.am_queue.labels(sender.url).set_function(sender.__len__)
    return senders


# The alerts about one target (ProbeOffline is about a probe: a window leaves it alone).
TARGET_ALERTS = "|".join((SERVICE_DOWN, SERVICE_REGION_DOWN, VERSION_SKEW))


def silencer(config: AggregatorConfig, session: aiohttp.ClientSession) -> MakeSilences:
    """Silence one target in every Alertmanager peer, for a maintenance window."""

    async def make(
        target: str, starts_at: float, ends_at: float, reason: str
    ) -> tuple[dict[str, str | None], dict[str, str]]:
        outcomes = await create_silences(
            session,
            config.alertmanager,
            # Only this Vigil's alerts about this target: its static labels (so a staging
            # Vigil's window never mutes production's) and its alert names (never another
            # tool's alert that happens to carry a `target` label).
            matchers={**config.alertmanager.labels, "target": target},
            regex={"alertname": TARGET_ALERTS},
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=f"vigil ({config.client_id})",
            comment=f"Vigil maintenance: {reason}",
        )
        made = {o.url: o.silence_id for o in outcomes}
        errors = {o.url: o.error for o in outcomes if o.error}
        if errors:
            log.warning("silence_failed", extra={"target": target, "errors": errors})
        return made, errors

    return make


def expirer(config: AggregatorConfig, session: aiohttp.ClientSession) -> ExpireSilences:
    """Expire a window's silences in the peers that hold one."""

    async def expire(silences: dict[str, str | None]) -> dict[str, str]:
        held = [(url, sid) for url, sid in silences.items() if sid]
        answers = await asyncio.gather(
            *(expire_silence(session, config.alertmanager, url, sid) for url, sid in held)
        )
        errors = {url: error for (url, _sid), error in zip(held, answers, strict=True) if error}
        if errors:
            log.warning("silence_expire_failed", extra={"errors": errors})
        return errors

    return expire


def fan_out(senders: list[PeerSender]) -> SendAlerts:
    """Send every alert update to each peer's queue."""

    def send(payloads: list[dict[str, object]]) -> None:
        for sender in senders:
            sender.enqueue(payloads)

    return send


def open_history(
    config: AggregatorConfig, metrics: AggregatorMetrics, clock: Callable[[], float]
) -> History | None:
    """The history database named by `storage.path`, opened; None when it is not set.

    Raises:
        StorageError: the file cannot be created, read or written (a config error).
    """
    if config.storage.path is None:
        return None
    counters = HistoryCounters(
        on_write_error=lambda what: metrics.history_write_errors.labels(what).inc(),
        on_dropped=metrics.history_dropped.inc,
    )
    history = History.open(
        config.storage, clock=clock, counters=counters, forget_after=config.forget_after
    )
    metrics.history_pending.set_function(lambda: history.db.pending)
    log.info("history_opened", extra={"path": str(config.storage.path)})
    return history


def build(
    config: AggregatorConfig,
    registry: CollectorRegistry,
    session: aiohttp.ClientSession | None,
    *,
    clock: Callable[[], float] = time.time,
    on_transitions: Callable[[list[Transition]], None] = lambda _t: None,
    send_alerts: SendAlerts | None = None,
) -> Aggregator:
    """Every part of the aggregator, each given what it needs.

    `session` is the HTTP session for Alertmanager; with None (or no peers configured) alerts
    go to the log, or to `send_alerts` when given.

    Raises:
        ConfigError: a secret file cannot be read.
    """
    engine = Engine(
        config.regions,
        config.rule_for,
        default_interval=config.default_interval,
        forget_after=config.forget_after,
        max_clock_skew=config.max_clock_skew,
        max_targets=config.limits.max_targets,
        max_targets_per_region=config.limits.max_targets_per_region,
    )
    store = SeriesStore(config.history)
    metrics = AggregatorMetrics(
        registry,
        engine,
        store,
        clock,
        max_series=config.limits.max_series,
        latency_histograms=config.metrics.latency_histograms,
        histogram_max_pairs=config.metrics.histogram_max_pairs,
    )
    history = open_history(config, metrics, clock)
    senders = alert_senders(config, session, metrics) if session is not None else []
    if senders:
        send_alerts = fan_out(senders)
    elif send_alerts is None:
        log.info("alerts_to_log", extra={"reason": "no alertmanager.urls configured"})
        send_alerts = ConsoleSink(clock).enqueue
    am = config.alertmanager
    alert_book = AlertBook(am.resend_interval, am.resolved_retention)
    readiness = Readiness()
    outbox = StateOutbox()
    pipeline = Pipeline(
        PipelineSettings(
            regions=frozenset(config.regions),
            max_clock_skew=config.max_clock_skew,
            max_result_age=config.max_result_age,
            startup_grace=config.startup_grace,
            client_id=config.client_id,
            # Long enough for the probes to reconnect too (their reconnect backoff is capped
            # at 30 s by default) and be heard from: their reconnect cap plus two intervals.
            reconnect_grace=30.0 + 2 * config.default_interval,
            max_probes_per_region=config.limits.max_probes_per_region,
        ),
        engine=engine,
        store=store,
        metrics=metrics,
        alert_book=alert_book,
        alert_settings=alert_settings(config),
        send_alerts=send_alerts,
        publish_state=outbox.put,
        readiness=readiness,
        clock=clock,
        on_transitions=on_transitions,
        history=history,
    )
    return Aggregator(
        config=config,
        registry=registry,
        engine=engine,
        store=store,
        metrics=metrics,
        alert_book=alert_book,
        readiness=readiness,
        outbox=outbox,
        pipeline=pipeline,
        senders=senders,
        clock=clock,
        history=history,
        make_silences=(
            silencer(config, session) if session is not None and config.alertmanager.urls else None
        ),
        expire_silences=(
            expirer(config, session) if session is not None and config.alertmanager.urls else None
        ),
    )


async def run_aggregator(
    config: AggregatorConfig,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    on_listening: Callable[[int], None] = lambda _port: None,
) -> int:
    """Run until `stop` is set; returns the exit code."""
    registry = registry if registry is not None else CollectorRegistry()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        agg = build(config, registry, session)
        subscriber = Subscriber(
            config.mqtt,
            agg.pipeline.handle,
            agg.outbox,
            client_id=config.client_id,
            session_expiry=config.session_expiry,
            subscribe_timeout=config.subscribe_timeout,
            on_connected=agg.pipeline.set_connected,
        )
        limits = ConnectionLimits(
            header_timeout=config.http.header_timeout,
            keepalive_timeout=config.http.keepalive_timeout,
            max_connections=config.http.max_connections,
        )
        runner, host, bound = await serve(
            make_app(agg.http_deps()), config.listen, limits, agg.metrics.connection_shed
        )
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
                    # A slice at a time, the loop free between: results keep flowing.
                    for _ in agg.pipeline.tick_slices(subscriber.subscribed.is_set()):
                        await asyncio.sleep(0)
                except Exception:  # a bug in one tick must not stop the clock
                    log.exception("tick_crashed")

        tasks = [asyncio.create_task(subscriber.run()), asyncio.create_task(ticking())]
        tasks += [asyncio.create_task(sender.run()) for sender in agg.senders]
        code = await until_stopped_or_crashed(stop, tasks, log)
        # A client that reads or sends slowly is cut off at the deadline.
        deadline = time.monotonic() + config.shutdown_timeout
        log.info("aggregator_stopping")
        for task in tasks:
            task.cancel()
        for task in tasks:
            # A crashed task's error was logged by until_stopped_or_crashed.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                # Disconnecting waits for a broker that may be frozen: bounded.
                await finish_within(deadline - time.monotonic(), task, task.get_name())
        # Requests in flight get what is left; a slow client must not hold the exit.
        await finish_within(deadline - time.monotonic(), runner.cleanup(), "http_cleanup")
        if agg.history is not None:
            # Queued writes finish (bounded) off the loop; nothing else runs now.
            await asyncio.to_thread(agg.history.close)
    log.info("aggregator_stopped")
    return code
