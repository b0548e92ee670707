"""The HTTP plumbing both services share: `/healthz`, `/metrics`, and starting the server.

The listener is guarded beneath aiohttp. aiohttp closes an idle keep-alive connection, but
it never times out a connection that has not finished its first request head, and it has no
cap on connections: a few thousand slow clients hold that many file descriptors, and at the
descriptor limit `accept()` fails and `/healthz` with it. `ConnectionGuard` caps open
connections and gives each new one `header_timeout` to deliver a complete request head.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from yarl import URL

from runtime.config import parse_listen
from runtime.logs import Throttle

log = logging.getLogger("vigil.http")

ShedReason = Literal["header_timeout", "evicted", "evicted_idle"]
OnShed = Callable[[ShedReason], None]
# `/metrics` in the text format 0.0.4, made in steps: each item is a piece of the response, or
# "" when there is nothing to send yet; the event loop runs between items.
MetricsText = Callable[[], Iterable[str]]

# Descriptors kept free beside the connections: logs, the broker, outgoing requests.
FD_HEADROOM = 64
SHED_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on the listener, so slow or many clients cannot starve `/healthz`."""

    # A new connection must deliver its first complete request head within this long.
    header_timeout: float = 10.0
    # An idle keep-alive connection is closed after this long (aiohttp's keepalive_timeout,
    # which also bounds a later request head that never completes).
    keepalive_timeout: float = 15.0
    # Connections open at once. At the cap a new connection closes the oldest one still
    # waiting for its request head, or else the one that has been quiet the longest.
    max_connections: int = 512


async def healthz(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


def add_machine_routes(
    app: web.Application, registry: CollectorRegistry, text: MetricsText | None = None
) -> None:
    """`/healthz` and `/metrics` on `app`.

    `/metrics` is prometheus_client's own aiohttp handler on `registry`, or with `text`, the
    stepped handler on that: for a registry too large to render in one turn of the loop.
    """
    app.router.add_get("/healthz", healthz)
    metrics = make_aiohttp_handler(registry) if text is None else stepped_metrics_handler(text)
    app.router.add_get("/metrics", metrics)


def stepped_metrics_handler(text: MetricsText) -> Handler:
    """A `/metrics` handler that lets the event loop run between the steps of `text`.

    The whole text is made before the response starts, so an error is still a 500, not a
    truncated scrape. Always the text format 0.0.4, whatever the Accept header asks (an
    OpenMetrics request included: Prometheus takes the Content-Type it gets). Compressed
    when the client accepts it, a piece at a time in aiohttp's executor, not on the loop.
    """

    async def metrics(request: web.Request) -> web.StreamResponse:
        body: list[bytes] = []
        for piece in text():
            if piece:
                body.append(piece.encode())
            await asyncio.sleep(0)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
        response.content_length = sum(len(chunk) for chunk in body)
        if request.method != "HEAD":
            # A HEAD answer has no body: a compressor would still write its header and
            # trailer, which a keep-alive client then reads as the start of the next response.
            response.enable_compression()
        await response.prepare(request)
        if request.method != "HEAD":
            for chunk in body:
                await response.write(chunk)
        await response.write_eof()
        return response

    return metrics


class ConnectionGuard:
    """Caps and times the connections of one listener; wraps aiohttp's protocol factory.

    A connection is evictable until its first request head is complete: a slow client can
    only ever hold a slot for `header_timeout`, and a flood of them cannot keep out a client
    that sends its request at once (the health check), because each newcomer at the cap
    pushes out the oldest silent one instead of being turned away.
    """

    def __init__(
        self,
        limits: ConnectionLimits,
        on_shed: OnShed | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._on_shed = on_shed
        self._open: set[_GuardedConnection] = set()
        # Connections still waiting for their first request head, oldest first.
        self._waiting: dict[_GuardedConnection, None] = {}
        # Every open connection, the one that sent nothing for longest first.
        self._quiet: dict[_GuardedConnection, None] = {}
        self._unlogged: Counter[str] = Counter()
        self._log_shed = Throttle(SHED_LOG_INTERVAL, clock)

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    def factory(self, make_protocol: Callable[[], asyncio.Protocol]) -> _ProtocolFactory:
        """A protocol factory for `loop.create_server` that guards `make_protocol`'s."""
        return _ProtocolFactory(self, make_protocol)

    def admit(self, conn: _GuardedConnection) -> bool:
        """Take `conn` in, making room if it must (always True: the newcomer gets a slot).

        At the cap the oldest connection still waiting for its request head goes; when every
        one has sent its head (keep-alive clients, pipelining clients that never read), the
        one quiet the longest goes, so held connections can never lock out `/healthz`.
        """
        if len(self._open) >= self.limits.max_connections:
            reason: ShedReason = "evicted" if self._waiting else "evicted_idle"
            victim = next(iter(self._waiting or self._quiet))
            self.release(victim)
            victim.close()
            self._shed(reason)
        self._open.add(conn)
        self._waiting[conn] = None
        self._quiet[conn] = None
        return True

    def heard_from(self, conn: _GuardedConnection) -> None:
        """`conn` sent data: it is the least quiet now."""
        if conn in self._quiet:
            del self._quiet[conn]
            self._quiet[conn] = None

    def head_received(self, conn: _GuardedConnection) -> None:
        """`conn` delivered its first request head: no longer evictable."""
        self._waiting.pop(conn, None)

    def head_overdue(self, conn: _GuardedConnection) -> None:
        """`conn` did not deliver a request head in time; it is being closed."""
        self.release(conn)
        self._shed("header_timeout")

    def release(self, conn: _GuardedConnection) -> None:
        """`conn` is closing and frees its slot (a no-op the second time)."""
        self._open.discard(conn)
        self._waiting.pop(conn, None)
        self._quiet.pop(conn, None)

    def _shed(self, reason: ShedReason) -> None:
        if self._on_shed is not None:
            self._on_shed(reason)
        self._unlogged[reason] += 1
        # A flood sheds thousands a second; one line a minute says it with the counts.
        if self._log_shed.ready("shed"):
            log.warning(
                "http_connections_shed",
                extra={
                    "shed": dict(self._unlogged),
                    "open": len(self._open),
                    "max_connections": self.limits.max_connections,
                },
            )
            self._unlogged.clear()


class _ProtocolFactory:
    def __init__(self, guard: ConnectionGuard, make_protocol: Callable[[], asyncio.Protocol]):
        self._guard = guard
        self._make_protocol = make_protocol

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self._guard, self._make_protocol)


class _GuardedConnection(asyncio.Protocol):
    """Stands in front of aiohttp's protocol for one connection, passing everything on."""

    def __init__(self, guard: ConnectionGuard, make_protocol: Callable[[], asyncio.Protocol]):
        self._guard = guard
        self._make_protocol = make_protocol
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        # Whether anything but blank lines has arrived (RFC 9112 lets a server skip CRLFs
        # before a request line, so they do not end a request head).
        self._started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard.admit(self):
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._head_overdue)
        self._inner = self._make_protocol()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._guard.heard_from(self)
        if self._timer is not None and self._head_complete(data):
            self._timer.cancel()
            self._timer = None
            self._guard.head_received(self)
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._guard.release(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def close(self) -> None:
        """Close the connection; aiohttp's protocol hears it as a lost connection."""
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    def _head_complete(self, data: bytes) -> bool:
        # A request head ends with an empty line; it may straddle two reads. Blank lines
        # before the request line are not a head.
        if not self._started:
            data = data.lstrip(b"\r\n")
            if not data:
                return False
            self._started = True
            self._tail = b""
        window = self._tail + data
        self._tail = window[-2:]
        return b"\n\r\n" in window or b"\n\n" in window

    def _head_overdue(self) -> None:
        self._timer = None
        self._guard.head_overdue(self)
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a `ConnectionGuard`."""

    __slots__ = ("_guard", "_host", "_port", "_server_runner")

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard):
        super().__init__(runner)
        self._server_runner = runner
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        """The site's URL."""
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        """Listen, with the guard in front of the runner's protocol factory."""
        await super().start()
        server = self._server_runner.server
        assert server is not None, "the runner is set up before a site is made"
        loop = asyncio.get_running_loop()
        # BaseSite.stop() closes `_server`, and the runner reads its addresses from it.
        self._server = await loop.create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog
        )


def _warn_if_above_fd_limit(limits: ConnectionLimits) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and limits.max_connections > soft - FD_HEADROOM:
        log.warning(
            "http_max_connections_above_fd_limit",
            extra={"max_connections": limits.max_connections, "nofile": soft},
        )


async def serve(
    app: web.Application,
    listen: str,
    limits: ConnectionLimits | None = None,
    on_shed: OnShed | None = None,
) -> tuple[web.AppRunner, str, int]:
    """Start `app` on `listen` ("host:port"; port 0 picks one), guarded by `limits`.

    Args:
        app: the application.
        listen: "host:port".
        limits: timeouts and the connection cap; `ConnectionLimits()` when None.
        on_shed: told each time the guard closes a connection, with the reason (a metric).

    Returns:
        The runner (call `cleanup()` to stop), the host and the bound port.

    Raises:
        OSError: the address cannot be bound.
    """
    limits = limits if limits is not None else ConnectionLimits()
    _warn_if_above_fd_limit(limits)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.keepalive_timeout)
    await runner.setup()
    host, port = parse_listen(listen)
    try:
        await GuardedSite(runner, host, port, ConnectionGuard(limits, on_shed)).start()
    except OSError:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, host, bound
