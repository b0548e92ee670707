"""One HTTP check of a target's health and version endpoints, with phase timings."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from probe.body import BodyDecoder
from probe.config import TargetConfig
from probe.lean import Answer, LeanClient
from probe.profiles import HealthEndpoint
from probe.verdict import (
    BodyEncodingError,
    BodyTooLargeError,
    Failure,
    Streak,
    classify_exception,
    judge_health,
    parse_version,
    short,
    version_error_kind,
)
from wire.result import MAX_ERROR_CHARS, ErrorKind, Phases, ProbeResult, VersionErrorKind

# Bodies are read off the socket in pieces of at most this many bytes.
READ_CHUNK = 16 * 1024

log = logging.getLogger("vigil.probe")


@dataclass
class PhaseTimer:
    """perf_counter stamps of one request, by the lean client or aiohttp's trace hooks."""

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
    # The leaf certificate as DER: present with and without verification.
    peer_der: bytes | None = None

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
            return protocol

        setattr(self, "_factory", factory)  # noqa: B010 - private attribute, see docstring
        self.splits_tls = True

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - the signature of aiohttp's connect
    ) -> Connection:
        """A connection from the pool or a new one, its peer's certificate put on the timer.

        Read here, for a reused connection as for a new one, and before the request is sent:
        a small response completes and releases the connection before the caller regains
        control. The DER form, because the parsed dict is empty when verification is off,
        which is where expiry matters most.
        """
        connection = await super().connect(req, traces, timeout)
        timer = _current_timer.get()
        transport = connection.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        if timer is not None and isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
            der = tls.getpeercert(binary_form=True)
            timer.peer_der = der if isinstance(der, bytes) else None
        return connection


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

    Bodies are not decompressed by aiohttp (its limit is 32 MiB per body): `read_body`
    decompresses them itself and stops at the target's `max_body`. Only the encodings it
    decodes are offered.
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
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "vigil-probe/0.1", "Accept-Encoding": "gzip, deflate"},
    )


async def read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read and decode `resp`'s body, stopping as soon as it is known to exceed `limit`.

    Raises:
        BodyTooLargeError: the decoded body (or the body as sent) is larger than `limit`.
        BodyEncodingError: an unsupported Content-Encoding, or data that does not decode.
        aiohttp.ClientError: the connection failed or the framing was bad.
    """
    decoder = BodyDecoder(resp.headers.get("Content-Encoding", ""), limit)
    decoder.refuse_announced(resp.content_length)  # announced too large: read none of it
    while not decoder.complete:
        chunk = await resp.content.read(READ_CHUNK)
        if not chunk:
            break
        decoder.feed(chunk)
    return decoder.finish()


def _der_item(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """The DER item at `pos`: (tag, start of its contents, end of its contents), within `end`."""
    if pos + 2 > end:
        return None
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # 0x80 is BER's indefinite length, never DER; four bytes is far beyond a certificate.
        if count == 0 or count > 4 or pos + count > end:
            return None
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        return None
    return tag, pos, pos + length


def _der_time(tag: int, raw: bytes) -> float | None:
    # RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ (years 1950-2049), GeneralizedTime
    # YYYYMMDDHHMMSSZ; both in UTC with seconds and no fractions.
    if tag == 0x17 and len(raw) == 13:
        digits, year_len = raw[:12], 2
    elif tag == 0x18 and len(raw) == 15:
        digits, year_len = raw[:14], 4
    else:
        return None
    if raw[-1:] != b"Z" or not digits.isdigit():
        return None
    text = digits.decode("ascii")
    year = int(text[:year_len])
    if year_len == 2:
        year += 1900 if year >= 50 else 2000
    rest = text[year_len:]
    try:
        moment = datetime.datetime(
            year,
            int(rest[0:2]),
            int(rest[2:4]),
            int(rest[4:6]),
            int(rest[6:8]),
            int(rest[8:10]),
            tzinfo=datetime.UTC,
        )
    except ValueError:
        return None
    # The wire carries no time before 1970; a certificate that old is simply long expired.
    return max(0.0, moment.timestamp())


def cert_not_after(der: bytes | None) -> float | None:
    """The expiry (notAfter) of a DER certificate as epoch seconds; None when unreadable.

    A walk of RFC 5280's structure: Certificate, TBSCertificate, then past the optional
    version, the serial number, the signature algorithm and the issuer to the Validity. It
    reads the certificate whether or not it was verified, and returns None, never raises, on
    anything that is not a well-formed certificate.
    """
    if not der:
        return None
    cert = _der_item(der, 0, len(der))
    if cert is None or cert[0] != 0x30:
        return None
    tbs = _der_item(der, cert[1], cert[2])
    if tbs is None or tbs[0] != 0x30:
        return None
    pos, end = tbs[1], tbs[2]
    item = _der_item(der, pos, end)
    if item is not None and item[0] == 0xA0:  # [0] EXPLICIT version
        pos = item[2]
    # serialNumber INTEGER, signature AlgorithmIdentifier, issuer Name.
    for expected in (0x02, 0x30, 0x30):
        item = _der_item(der, pos, end)
        if item is None or item[0] != expected:
            return None
        pos = item[2]
    validity = _der_item(der, pos, end)
    if validity is None or validity[0] != 0x30:
        return None
    not_before = _der_item(der, validity[1], validity[2])
    if not_before is None:
        return None
    not_after = _der_item(der, not_before[2], validity[2])
    if not_after is None:
        return None
    return _der_time(not_after[0], der[not_after[1] : not_after[2]])


@dataclass
class HealthOutcome:
    """What one health request saw."""

    started_at: float
    duration_ms: float
    status_code: int | None
    failure: Failure | None
    phases: Phases
    tls_not_after: float | None
    endpoint: HealthEndpoint
    # Kept only when the endpoint carries the version, to read it from there.
    body: bytes = b""


def with_auth_hint(outcome: HealthOutcome) -> HealthOutcome:
    """`outcome`, its 401/403 error followed by the endpoint's `auth_hint` when it has one.

    The status and the hint are kept whole; the body's detail between them is clipped.
    """
    hint, failure = outcome.endpoint.auth_hint, outcome.failure
    if hint is None or failure is None or outcome.status_code not in (401, 403):
        return outcome
    suffix = f" ({hint})"
    text = short(failure.error, MAX_ERROR_CHARS - len(suffix)) + suffix
    return dataclasses.replace(outcome, failure=failure._replace(error=text))


@dataclass
class VersionCache:
    """The last version and its ETag, so an unchanged version costs a 304."""

    etag: str | None = None
    version: str | None = None


class VersionRead(NamedTuple):
    """What the version leg of a check found: the version, or why not and the HTTP status."""

    version: str | None = None
    error: VersionErrorKind | None = None
    # The status of the request that answered (the version endpoint, or the login that
    # failed); None when no answer came.
    status: int | None = None


# After a failed login the next waits this long, doubling per failure up to the cap, so a
# wrong password costs the service one login per interval of minutes, not one per check.
LOGIN_BACKOFF = 30.0
LOGIN_BACKOFF_MAX = 1800.0


@dataclass
class LoginState:
    """A target's session cookie from `version_login`, and the backoff after failures."""

    cookie: str | None = None
    failures: int = 0
    # time.monotonic() before which no login is tried.
    not_before: float = 0.0
    # Why the last login failed, reported again while waiting (a timeout is not `auth`).
    last_error: VersionErrorKind = VersionErrorKind.AUTH
    last_status: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class TargetMemory:
    """Per-target memory of the probe: sequence number, streak, version cache, endpoint."""

    seq: int = 0
    streak: Streak = field(default_factory=Streak)
    version: VersionCache = field(default_factory=VersionCache)
    # Index into the target's health endpoints: the one that answered last (see profiles).
    endpoint: int = 0
    # The previous check passed on the same endpoint: only then can a result be `slow`. The
    # first check, the first after a failure (a restart, a refused connection) and the first
    # on a new endpoint carry cold-start costs that say nothing about the latency budget.
    warm: bool = False


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
        lean: LeanClient,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._region = region
        self._probe_id = probe_id
        self._boot_id = boot_id
        self._fresh = fresh
        self._pooled = pooled
        self._lean = lean
        self._wall = wall_clock
        self._state: dict[str, TargetMemory] = {}
        # Identify the caller, so a target's logs (and the demo target) can tell regions apart.
        self._id_headers = {"X-Vigil-Region": region, "X-Vigil-Probe": probe_id}
        self._logins: dict[str, LoginState] = {}

    def _session(self, target: TargetConfig) -> aiohttp.ClientSession:
        return self._pooled if target.reuse_connections else self._fresh

    async def health(
        self, target: TargetConfig, endpoint: HealthEndpoint | None = None
    ) -> HealthOutcome:
        """GET one health endpoint (by default the target's first) once and judge it."""
        if endpoint is None:
            endpoint = target.health_endpoints[0]
        url = target.url + endpoint.path
        timer = PhaseTimer()
        started_at = self._wall()
        timer.start = time.perf_counter()
        token = _current_timer.set(timer)
        status: int | None = None
        failure: Failure | None = None
        body = b""
        try:
            async with asyncio.timeout(target.timeout):
                answer = await self._get_health(target, url, timer)
            status, body = answer.status, answer.body
            if answer.body_error is not None:
                # A wrong status says more than the page that came with it, and a
                # status-only check (`body: null`) never needed the rest of a page.
                status_only = endpoint.json_field is None and isinstance(
                    answer.body_error, BodyTooLargeError
                )
                if status == target.expected_status and not status_only:
                    raise answer.body_error
            failure = judge_health(
                status,
                body,
                expected_status=target.expected_status,
                json_field=endpoint.json_field,
                equals=endpoint.equals,
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
            phases=timer.phases(tls=url.startswith("https:")),
            tls_not_after=cert_not_after(timer.peer_der),
            endpoint=endpoint,
            body=body if endpoint.version_field else b"",
        )

    async def _get_health(self, target: TargetConfig, url: str, timer: PhaseTimer) -> Answer:
        """One GET of a health endpoint: the lean client on a fresh connection, else the pool."""
        headers = {**self._id_headers, **target.headers}
        if not target.reuse_connections:
            return await self._lean.get(url, headers, target.ssl, timer, target.max_body)
        async with self._pooled.get(
            url,
            headers=headers,
            ssl=target.ssl,
            allow_redirects=False,
            trace_request_ctx={"timer": timer},
            timeout=aiohttp.ClientTimeout(total=None),
        ) as resp:
            try:
                body = await read_body(resp, target.max_body)
            except (BodyTooLargeError, BodyEncodingError) as exc:
                timer.done = time.perf_counter()
                return Answer(resp.status, b"", exc)
            timer.done = time.perf_counter()
            return Answer(resp.status, body)

    async def detect_health(self, target: TargetConfig, state: TargetMemory) -> HealthOutcome:
        """Check the endpoint that answered last; on its 404 only, try the others in order.

        The first other endpoint that answers with any status but 404 is remembered and its
        outcome (pass or fail) is the check's; when none does, the 404 stands. A rollback or
        an upgrade that removes the endpoint in use is found the same way, on its 404.
        """
        endpoints = target.health_endpoints
        active = state.endpoint if state.endpoint < len(endpoints) else 0
        outcome = await self.health(target, endpoints[active])
        if outcome.status_code != 404 or len(endpoints) == 1:
            state.endpoint = active
            return with_auth_hint(outcome) if len(endpoints) > 1 else outcome
        answered: HealthOutcome | None = None
        # Each endpoint asked has the target's timeout: a check that has to look elsewhere
        # (rare: a first detection, an upgrade) may take longer than one interval, and the
        # scheduler then skips a slot rather than cut a slow but healthy answer short.
        for index, other in enumerate(endpoints):
            if index == active:
                continue
            candidate = await self.health(target, other)
            if candidate.failure is None:
                log.warning(
                    "health_endpoint_switched",
                    extra={
                        "target": target.name,
                        "from_path": endpoints[active].path,
                        "to_path": other.path,
                        "status": candidate.status_code,
                    },
                )
                state.endpoint = index
                state.warm = False
                return candidate
            if answered is None and candidate.status_code != 404:
                answered = candidate
        # Moved only to an endpoint that passes: one that fails (or a cookie that expired on
        # a 401) is not remembered, so the next check starts from the same place. Its
        # failure is the honest one to report, though: the 404 only said "not here".
        return answered or outcome

    async def _login(self, target: TargetConfig, login: LoginState) -> VersionRead | None:
        """POST the password to the login URL and keep the session cookie; None on success."""
        spec, url = target.version_login, target.login_url
        if spec is None or url is None:
            return None
        now = time.monotonic()
        if now < login.not_before:
            return VersionRead(None, login.last_error, login.last_status)
        status: int | None = None
        error: VersionErrorKind
        try:
            async with asyncio.timeout(target.timeout):
                async with self._session(target).post(
                    url,
                    json={"password": spec.password_file.value.get_secret_value()},
                    headers=self._id_headers,
                    ssl=target.ssl,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as resp:
                    status = resp.status
                    morsel = resp.cookies.get(spec.cookie)
            if 200 <= status < 300 and morsel is not None and morsel.value:
                login.cookie = f"{spec.cookie}={morsel.value}"
                login.failures, login.not_before = 0, 0.0
                log.info("version_login", extra={"target": target.name, "status": status})
                return None
            error = VersionErrorKind.AUTH if status < 500 else VersionErrorKind.HTTP_STATUS
        except Exception as exc:
            error = version_error_kind(classify_exception(exc))
        login.failures += 1
        login.last_error, login.last_status = error, status
        wait = min(LOGIN_BACKOFF * 2 ** (login.failures - 1), LOGIN_BACKOFF_MAX)
        login.not_before = now + wait
        # The status and the kind only: never the password nor any cookie.
        log.warning(
            "version_login_failed",
            extra={"target": target.name, "status": status, "kind": str(error), "retry_in": wait},
        )
        return VersionRead(None, error, status)

    async def _session_cookie(
        self, target: TargetConfig, renew: str | None
    ) -> tuple[str | None, VersionRead | None]:
        """The login cookie, logging in when there is none or when `renew` was refused."""
        login = self._logins.setdefault(target.name, LoginState())
        async with login.lock:
            if renew is not None and login.cookie == renew:
                login.cookie = None
            if login.cookie is None:
                failed = await self._login(target, login)
                if failed is not None:
                    return None, failed
            return login.cookie, None

    async def version(self, target: TargetConfig, cache: VersionCache) -> VersionRead:
        """GET the version endpoint with If-None-Match; updates `cache` on a fresh answer.

        With `version_login`, the session cookie is obtained first and, when the version
        endpoint answers 401 (the session expired or was revoked), obtained again once and
        the request retried once.
        """
        if target.version_url is None:
            return VersionRead()
        cookie: str | None = None
        if target.version_login is not None:
            cookie, failed = await self._session_cookie(target, renew=None)
            if failed is not None:
                return failed
        read = await self._get_version(target, cache, cookie)
        if read.status == 401 and cookie is not None:
            cookie, failed = await self._session_cookie(target, renew=cookie)
            if failed is not None:
                return failed
            read = await self._get_version(target, cache, cookie)
        return read

    async def _get_version(
        self, target: TargetConfig, cache: VersionCache, cookie: str | None
    ) -> VersionRead:
        url = target.version_url
        if url is None:
            return VersionRead()
        headers = {**self._id_headers, **target.headers, **target.version_header_values()}
        if cookie is not None:
            headers["Cookie"] = cookie
        if cache.etag:
            headers["If-None-Match"] = cache.etag
        try:
            async with asyncio.timeout(target.timeout):
                async with self._session(target).get(
                    url,
                    headers=headers,
                    ssl=target.ssl,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as resp:
                    if resp.status == 304 and cache.version is not None:
                        return VersionRead(cache.version, None, resp.status)
                    # Only a success's body is read: a 401 is `auth` whatever page comes with it.
                    ok = 200 <= resp.status < 300
                    body = await read_body(resp, target.max_body) if ok else b""
                    version, error = parse_version(resp.status, body, target.version_field)
                    if version is not None:
                        cache.version = version
                        cache.etag = resp.headers.get("ETag")
                    return VersionRead(version, error, resp.status)
        except Exception as exc:
            return VersionRead(None, version_error_kind(classify_exception(exc)))

    async def _bounded_version(self, target: TargetConfig, cache: VersionCache) -> VersionRead:
        # A login, the request and one renewal share the target's timeout: the health
        # result waits for this leg, and a check must not outlast its interval.
        try:
            async with asyncio.timeout(target.timeout):
                return await self.version(target, cache)
        except TimeoutError:
            return VersionRead(None, VersionErrorKind.TIMEOUT)

    async def run(self, target: TargetConfig, scheduled_at: float) -> ProbeResult:
        """Check health and version concurrently and return the next result for `target`."""
        state = self._state.setdefault(target.name, TargetMemory())
        endpoints = target.health_endpoints
        # An endpoint that carries the version makes the version request needless, unless
        # the config gave the version endpoint credentials on purpose.
        carried = endpoints[min(state.endpoint, len(endpoints) - 1)].version_field is not None
        ask = not carried or target.has_version_credentials
        read = VersionRead()
        if ask and target.version_url is not None:
            outcome, read = await asyncio.gather(
                self.detect_health(target, state), self._bounded_version(target, state.version)
            )
        else:
            # No second request: awaited in this task, as gather would cost two more tasks
            # and a turn of the event loop before the health request starts.
            outcome = await self.detect_health(target, state)
        field_name = outcome.endpoint.version_field
        if field_name is not None and read.version is None:
            if outcome.status_code is None and outcome.failure is not None:
                read = VersionRead(None, version_error_kind(outcome.failure))
            elif outcome.status_code is not None:
                read = VersionRead(
                    *parse_version(outcome.status_code, outcome.body, field_name),
                    outcome.status_code,
                )
        # Only a failed read carries its status, and only one the wire can hold.
        version_status = read.status if read.error is not None else None
        if version_status is not None and not 100 <= version_status <= 599:
            version_status = None
        ok = outcome.failure is None
        # Read after the check: moving to another endpoint makes the target cold again.
        warm = state.warm
        # A failure of the probe's own making says nothing about the target: the streak
        # stays where the last real check left it.
        inconclusive = outcome.failure is not None and outcome.failure.kind is ErrorKind.INTERNAL
        if not inconclusive:
            state.streak = state.streak.after(ok)
            state.warm = ok
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
            version=read.version,
            version_error=read.error,
            version_status=version_status,
            tls_not_after=outcome.tls_not_after,
            consecutive_failures=state.streak.failures,
            consecutive_successes=state.streak.successes,
            slow=warm and outcome.duration_ms > target.latency_budget * 1000.0,
            interval=target.interval,
            inconclusive=inconclusive,
            health_path=outcome.endpoint.path,
        )
