"""One HTTP check of a target's health and version endpoints, with phase timings."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

from probe.config import TargetConfig
from probe.verdict import (
    Failure,
    Streak,
    classify_exception,
    judge_health,
    parse_version,
    version_error_kind,
)
from runtime.tls import client_context
from wire.result import ErrorKind, Phases, ProbeResult, VersionErrorKind

# Health and version bodies are small JSON documents; reading more would let a broken or
# hostile target cost the probe memory.
MAX_BODY_BYTES = 64 * 1024

log = logging.getLogger("vigil.probe")


@dataclass
class PhaseTimer:
    """perf_counter stamps of one request, filled in by aiohttp's trace hooks."""

    start: float | None = None
    dns_start: float | None = None
    dns_end: float | None = None
    conn_start: float | None = None
    tcp_connected: float | None = None
    conn_end: float | None = None
    headers_sent: float | None = None
    response: float | None = None
    done: float | None = None
    reused: bool = False
    # The connection's protocol, kept so the certificate can be read once TLS is up.
    protocol: Any = None
    peercert: dict[str, Any] | None = None

    def phases(self, tls: bool) -> Phases:
        """Phase durations in ms; None where the phase did not happen or was not seen."""

        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else max(0.0, (b - a) * 1000.0)

        connect_from = self.dns_end if self.dns_end is not None else self.conn_start
        connect_to = self.tcp_connected if self.tcp_connected is not None else self.conn_end
        sent = self.headers_sent or self.conn_end or self.start
        return Phases(
            dns=ms(self.dns_start, self.dns_end),
            connect=None if self.reused else ms(connect_from, connect_to),
            tls=ms(self.tcp_connected, self.conn_end) if tls and not self.reused else None,
            ttfb=ms(sent, self.response),
            transfer=ms(self.response, self.done),
        )


# The timer of the request running in the current task, for the connector hook below.
_current_timer: contextvars.ContextVar[PhaseTimer | None] = contextvars.ContextVar(
    "vigil_phase_timer", default=None
)


class TimedConnector(aiohttp.TCPConnector):
    """A TCP connector that also stamps the end of the TCP connect, before any TLS handshake.

    aiohttp reports connection creation as one span covering DNS, TCP and TLS. asyncio calls
    the protocol factory once the socket is connected and before the handshake starts, so
    wrapping the factory splits `connect` from `tls`. aiohttp has no public hook for this and
    `_factory` is private: on an aiohttp without it `splits_tls` is False, the probe logs it
    and reports the handshake inside `connect` with `tls` unmeasured. The component tests in
    tests/component/test_check.py fail on such an aiohttp (the hook is missing, or a slow
    handshake no longer lands in `tls`), and they run on the locked version the image ships.
    """

    splits_tls = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        inner: Callable[[], Any] | None = getattr(self, "_factory", None)
        if not callable(inner):
            log.warning(
                "tls_phase_unmeasured",
                extra={"reason": f"aiohttp {aiohttp.__version__} has no TCPConnector._factory"},
            )
            return

        def factory() -> Any:
            timer = _current_timer.get()
            protocol = inner()
            if timer is not None:
                timer.tcp_connected = time.perf_counter()
                timer.protocol = protocol
            return protocol

        setattr(self, "_factory", factory)  # noqa: B010 - private attribute, see docstring
        self.splits_tls = True


def _timer_of(ctx: SimpleNamespace) -> PhaseTimer | None:
    # Requests made without a timer (the version check) pass no trace context.
    request_ctx = ctx.trace_request_ctx
    timer = request_ctx.get("timer") if isinstance(request_ctx, dict) else None
    return timer if isinstance(timer, PhaseTimer) else None


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    def stamp(name: str) -> Callable[..., Any]:
        async def hook(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: object) -> None:
            timer = _timer_of(ctx)
            if timer is not None:
                setattr(timer, name, time.perf_counter())

        return hook

    async def connected(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: object) -> None:
        timer = _timer_of(ctx)
        if timer is None:
            return
        timer.conn_end = time.perf_counter()
        # Read the certificate now: a small response completes and closes the connection
        # before the caller regains control.
        transport = getattr(timer.protocol, "transport", None)
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if isinstance(cert, dict):
            timer.peercert = cert

    async def reused(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: object) -> None:
        timer = _timer_of(ctx)
        if timer is not None:
            timer.reused = True

    trace.on_dns_resolvehost_start.append(stamp("dns_start"))
    trace.on_dns_resolvehost_end.append(stamp("dns_end"))
    trace.on_connection_create_start.append(stamp("conn_start"))
    trace.on_connection_create_end.append(connected)
    trace.on_connection_reuseconn.append(reused)
    trace.on_request_headers_sent.append(stamp("headers_sent"))
    trace.on_request_end.append(stamp("response"))
    trace.freeze()
    return trace


def make_session(
    *, reuse_connections: bool, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """An HTTP session for checks.

    Without reuse, every request opens its own connection and resolves DNS afresh, so each
    check measures the whole path a new user's request takes. `resolver` (aiohttp's public
    resolver interface; the system's by default) is the seam for tests: it sends any host
    name to a local server through this same connector, trace hooks and timings.
    """
    connector = TimedConnector(
        limit=0,
        force_close=not reuse_connections,
        use_dns_cache=reuse_connections,
        enable_cleanup_closed=False,
        resolver=resolver,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=[_trace_config()],
        auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "vigil-probe/0.1"},
    )


def ssl_context_for(target: TargetConfig) -> ssl.SSLContext | bool:
    """The `ssl=` argument for a target's requests.

    True (aiohttp's default) for plain http, False to skip verification, else a verifying
    context; callers build it once, as loading a CA bundle costs tens of milliseconds.

    Raises:
        OSError, ssl.SSLError: the CA file cannot be loaded.
    """
    if not target.url.startswith("https:"):
        return True
    if not target.tls_verify:
        return False
    return client_context(ca_file=target.ca_file)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY_BYTES:
        chunk = await resp.content.read(MAX_BODY_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def cert_not_after(cert: dict[str, Any] | None) -> float | None:
    """The leaf certificate's expiry as epoch seconds, when known.

    With verification off Python hands back an empty dict: the expiry is not known then.
    """
    if not cert or "notAfter" not in cert:
        return None
    try:
        return float(ssl.cert_time_to_seconds(cert["notAfter"]))
    except ValueError:
        return None


@dataclass
class HealthOutcome:
    """What one health request saw."""

    started_at: float
    duration_ms: float
    status_code: int | None
    failure: Failure | None
    phases: Phases
    tls_not_after: float | None


@dataclass
class VersionCache:
    """The last version and its ETag, so an unchanged version costs a 304."""

    etag: str | None = None
    version: str | None = None


@dataclass
class TargetMemory:
    """Per-target memory of the probe: sequence number, streak, version cache."""

    seq: int = 0
    streak: Streak = field(default_factory=Streak)
    version: VersionCache = field(default_factory=VersionCache)


class Checker:
    """Runs checks and turns them into wire results; holds each target's state."""

    def __init__(
        self,
        *,
        region: str,
        probe_id: str,
        boot_id: str,
        fresh: aiohttp.ClientSession,
        pooled: aiohttp.ClientSession,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._region = region
        self._probe_id = probe_id
        self._boot_id = boot_id
        self._fresh = fresh
        self._pooled = pooled
        self._wall = wall_clock
        self._state: dict[str, TargetMemory] = {}
        # Identify the caller, so a target's logs (and the demo target) can tell regions apart.
        self._id_headers = {"X-Vigil-Region": region, "X-Vigil-Probe": probe_id}
        self._ssl: dict[tuple[bool, bool, str], ssl.SSLContext | bool] = {}
        self._auth: dict[str, str | None] = {}

    def _session(self, target: TargetConfig) -> aiohttp.ClientSession:
        return self._pooled if target.reuse_connections else self._fresh

    def _ssl_for(self, target: TargetConfig) -> ssl.SSLContext | bool:
        # Shared by every target with the same TLS settings; never built inside a timed span.
        key = (target.url.startswith("https:"), target.tls_verify, str(target.ca_file))
        if key not in self._ssl:
            self._ssl[key] = ssl_context_for(target)
        return self._ssl[key]

    async def health(self, target: TargetConfig) -> HealthOutcome:
        """GET the health endpoint once and judge it."""
        tls = self._ssl_for(target)
        timer = PhaseTimer()
        started_at = self._wall()
        timer.start = time.perf_counter()
        token = _current_timer.set(timer)
        status: int | None = None
        failure: Failure | None = None
        try:
            async with asyncio.timeout(target.timeout):
                async with self._session(target).get(
                    target.health_url,
                    headers={**self._id_headers, **target.headers},
                    ssl=tls,
                    allow_redirects=False,
                    trace_request_ctx={"timer": timer},
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as resp:
                    status = resp.status
                    body = await _read_capped(resp)
                    timer.done = time.perf_counter()
            body_rule = target.body
            failure = judge_health(
                status,
                body,
                expected_status=target.expected_status,
                json_field=body_rule.json_field if body_rule else None,
                equals=body_rule.equals if body_rule else None,
            )
        except Exception as exc:
            failure = classify_exception(exc)
        finally:
            _current_timer.reset(token)
        end = timer.done or time.perf_counter()
        return HealthOutcome(
            started_at=started_at,
            duration_ms=(end - timer.start) * 1000.0,
            status_code=status,
            failure=failure,
            phases=timer.phases(tls=target.health_url.startswith("https:")),
            tls_not_after=cert_not_after(timer.peercert),
        )

    async def version(
        self, target: TargetConfig, cache: VersionCache
    ) -> tuple[str | None, VersionErrorKind | None]:
        """GET the version endpoint with If-None-Match; updates `cache` on a fresh answer."""
        url = target.version_url
        if url is None:
            return None, None
        headers = {**self._id_headers, **target.headers}
        if target.name not in self._auth:
            # Read once: a secret file is not re-read on every check's hot path.
            self._auth[target.name] = target.auth_header()
        auth = self._auth[target.name]
        if auth:
            headers["Authorization"] = auth
        if cache.etag:
            headers["If-None-Match"] = cache.etag
        try:
            async with asyncio.timeout(target.timeout):
                async with self._session(target).get(
                    url,
                    headers=headers,
                    ssl=self._ssl_for(target),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as resp:
                    if resp.status == 304 and cache.version is not None:
                        return cache.version, None
                    body = await _read_capped(resp)
                    version, error = parse_version(resp.status, body, target.version_field)
                    if version is not None:
                        cache.version = version
                        cache.etag = resp.headers.get("ETag")
                    return version, error
        except Exception as exc:
            return None, version_error_kind(classify_exception(exc))

    async def run(self, target: TargetConfig, scheduled_at: float) -> ProbeResult:
        """Check health and version concurrently and return the next result for `target`."""
        state = self._state.setdefault(target.name, TargetMemory())
        outcome, (version, version_error) = await asyncio.gather(
            self.health(target), self.version(target, state.version)
        )
        ok = outcome.failure is None
        # A failure of the probe's own making says nothing about the target: the streak
        # stays where the last real check left it.
        inconclusive = outcome.failure is not None and outcome.failure.kind is ErrorKind.INTERNAL
        if not inconclusive:
            state.streak = state.streak.after(ok)
        state.seq += 1
        return ProbeResult(
            probe_id=self._probe_id,
            region=self._region,
            target=target.name,
            boot_id=self._boot_id,
            seq=state.seq,
            scheduled_at=scheduled_at,
            started_at=outcome.started_at,
            duration_ms=outcome.duration_ms,
            ok=ok,
            status_code=outcome.status_code,
            error_kind=outcome.failure.kind if outcome.failure else None,
            error=outcome.failure.error if outcome.failure else None,
            phases=outcome.phases,
            version=version,
            version_error=version_error,
            tls_not_after=outcome.tls_not_after,
            consecutive_failures=state.streak.failures,
            consecutive_successes=state.streak.successes,
            slow=outcome.duration_ms > target.latency_budget * 1000.0,
            interval=target.interval,
            inconclusive=inconclusive,
        )
