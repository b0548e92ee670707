"""Wiring: builds the probe agent from its config and owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TextIO

from prometheus_client import CollectorRegistry

from probe.buffer import ResultBuffer
from probe.check import Checker, make_session
from probe.config import ProbeConfig, TargetConfig
from probe.http import make_app
from probe.lean import LeanClient
from probe.metrics import ProbeMetrics
from probe.mqtt import Publisher
from probe.schedule import Scheduler
from runtime.http import serve
from runtime.service import finish_within, until_stopped_or_crashed
from wire.result import ProbeResult

log = logging.getLogger("vigil.probe")


def new_boot_id() -> str:
    """A random id for this process start, so the aggregator can tell restarts apart."""
    return secrets.token_hex(16)


# The garbage collector's youngest-generation threshold (Python's default is 700). Checks in
# flight hold thousands of young objects: at 700 nearly every young collection found them
# alive and moved them on, and the older generations' collections walked them again. At
# 1,000 checks/s that cost 3-5% of the CPU, at saturation over 10%; at 5,000 about half.
GC_YOUNG_THRESHOLD = 5000


def tune_gc() -> None:
    """Set the garbage collector up for a long-running probe; call once the config is loaded.

    What start-up built (the config, its targets, imported modules) lives as long as the
    process, yet every full collection walked it again: with 1,000 targets a pause of up to
    80 ms, a check started that much late (measured with gc.callbacks, docs/performance.md).
    Frozen, it is never scanned; garbage made later is collected as before, less often.
    """
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def settle_gc() -> None:
    """Freeze what the first round of checks built; call once every target has been checked.

    Each target's first check builds state that lives as long as the process: its metrics'
    label children (seven, each with a lock and a value), its memory, its version cache.
    At 1,000 targets that is some 27,000 objects, and every full collection walked them: a
    pause of about 30 ms every few seconds at 1,000 checks/s (docs/performance.md).

    Whatever is alive at that moment is frozen too: the broker connection of the time (its
    aiomqtt and paho clients refer to each other) and checks in flight. Once replaced, they
    are never collected: a bounded, one-time cost.
    """
    gc.collect()
    gc.freeze()


def warm_up_time(targets: Sequence[TargetConfig]) -> float:
    """Seconds until every target's first check is over: jitter spreads them over an interval."""
    return max(t.interval + t.timeout for t in targets)


@contextlib.asynccontextmanager
async def checker_for(config: ProbeConfig, boot_id: str) -> AsyncIterator[Checker]:
    """A `Checker` with its HTTP sessions, closed on exit."""
    async with (
        make_session(reuse_connections=False) as fresh,
        make_session(reuse_connections=True) as pooled,
        LeanClient() as lean,
    ):
        yield Checker(
            region=config.region,
            probe_id=config.probe_id,
            boot_id=boot_id,
            fresh=fresh,
            pooled=pooled,
            lean=lean,
        )


def publisher_for(
    config: ProbeConfig,
    buffer: ResultBuffer,
    boot_id: str,
    *,
    on_published: Callable[[int], None] = lambda _n: None,
    on_connected: Callable[[bool], None] = lambda _c: None,
    on_refused: Callable[[str], None] = lambda _reason: None,
) -> Publisher | None:
    """The MQTT publisher for this probe, or None when no broker is configured."""
    if config.mqtt is None:
        return None
    return Publisher(
        config.mqtt,
        buffer,
        region=config.region,
        probe_id=config.probe_id,
        boot_id=boot_id,
        targets={t.name: t.interval for t in config.targets},
        on_published=on_published,
        on_connected=on_connected,
        on_refused=on_refused,
    )


def _log_result(result: ProbeResult) -> None:
    if not result.ok:
        log.warning(
            "check_failed",
            extra={
                "target": result.target,
                "error_kind": str(result.error_kind),
                "error": result.error,
                "streak": result.consecutive_failures,
            },
        )


async def run_agent(
    config: ProbeConfig,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    boot_id: str | None = None,
    on_listening: Callable[[int], None] = lambda _port: None,
    on_warm: Callable[[], None] = lambda: None,
) -> int:
    """Run the probe until `stop` is set, then shut down in order; returns the exit code.

    Shutdown: stop scheduling, let checks in flight finish, flush buffered results, publish
    `offline`, close. All of it within `config.shutdown_timeout`. `on_warm` is called once,
    when every target's first check is over (the command line passes `settle_gc`).
    """
    registry = registry if registry is not None else CollectorRegistry()
    boot_id = boot_id or new_boot_id()
    metrics = ProbeMetrics(registry)
    buffer = ResultBuffer(
        config.buffer_size,
        on_drop=metrics.buffer_dropped.inc,
        replay_window=config.replay_window or 0.0,
    )
    metrics.buffer_depth.set_function(lambda: len(buffer))

    publisher = publisher_for(
        config,
        buffer,
        boot_id,
        on_published=metrics.published.inc,
        on_connected=lambda up: metrics.broker_connected.set(1 if up else 0),
        on_refused=lambda reason: metrics.refused.labels(reason).inc(),
    )

    runner, host, bound = await serve(make_app(registry), config.listen)
    on_listening(bound)
    log.info(
        "probe_started",
        extra={
            "region": config.region,
            "probe_id": config.probe_id,
            "boot_id": boot_id,
            "targets": len(config.targets),
            "listen": f"{host}:{bound}",
        },
    )

    async with checker_for(config, boot_id) as checker:

        async def check(target: TargetConfig, scheduled_at: float) -> bool:
            try:
                result = await checker.run(target, scheduled_at)
            except Exception:  # a bug must cost one result, never the scheduler
                log.exception("check_crashed", extra={"target": target.name})
                return False
            metrics.observe(result)
            _log_result(result)
            if publisher is not None:
                buffer.put(result)
            # Confirm a real failure quickly; a probe-side error confirms nothing.
            return not result.ok and not result.inconclusive

        scheduler = Scheduler(
            config.targets,
            check,
            max_in_flight=config.max_in_flight,
            on_skip=lambda t, reason: metrics.skipped.labels(t, reason).inc(),
            on_lateness=lambda _t, s: metrics.lateness.observe(s),
        )
        publishing = asyncio.create_task(publisher.run()) if publisher else None
        scheduler.start()
        warm = asyncio.get_running_loop().call_later(warm_up_time(config.targets), on_warm)
        code = await until_stopped_or_crashed(stop, [publishing] if publishing else [], log)

        warm.cancel()
        deadline = time.monotonic() + config.shutdown_timeout
        log.info("probe_stopping", extra={"buffered": len(buffer)})
        # Checks may use at most their own timeout; the rest of the budget is for flushing.
        longest = max(t.timeout for t in config.targets)
        await scheduler.stop(grace=min(longest, config.shutdown_timeout / 2))
        if publisher is not None and publishing is not None:
            await publisher.close(max(0.1, deadline - time.monotonic()))
            publishing.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                # Disconnecting waits for a broker that may be frozen: bounded too.
                await finish_within(deadline - time.monotonic(), publishing, "mqtt_disconnect")
    # Requests in flight get what is left; a slow client must not hold the exit.
    await finish_within(deadline - time.monotonic(), runner.cleanup(), "http_cleanup")
    log.info("probe_stopped", extra={"unsent": len(buffer) if publisher else 0})
    return code


async def run_once(config: ProbeConfig, out: TextIO) -> int:
    """Check every target once, print each result as a JSON line, publish when configured.

    Returns 0 when every check passed, 1 otherwise.
    """
    boot_id = new_boot_id()
    async with checker_for(config, boot_id) as checker:
        now = time.time()
        results = await asyncio.gather(*(checker.run(t, now) for t in config.targets))
    for result in results:
        out.write(result.to_json().decode() + "\n")
    out.flush()
    buffer = ResultBuffer(len(results))
    for result in results:
        buffer.put(result)
    publisher = publisher_for(config, buffer, boot_id)
    if publisher is not None and config.mqtt is not None:
        publishing = asyncio.create_task(publisher.run())
        try:
            async with asyncio.timeout(config.shutdown_timeout):
                await publisher.connected.wait()
                await buffer.wait_empty()
        except TimeoutError:
            log.error("publish_timeout", extra={"unsent": len(buffer), "broker": config.mqtt.url})
        await publisher.close(1.0)
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        if len(buffer):
            return 1
    return 0 if all(r.ok for r in results) else 1
