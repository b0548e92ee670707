"""A lean HTTP/1.1 GET for health checks on a fresh connection: one request, one answer.

Why not aiohttp here: a check on a fresh connection uses none of what a session is for
(pooling, cookies, redirects, retries), and aiohttp's request path cost about 2.5 times
this client's CPU per GET, and 4 times a bare `asyncio.Protocol`'s, on the same loop
(`benchmarks/client_cost.py`, figures in docs/performance.md): at 1,000 checks a second
the difference was a third of a core.
What a check needs is kept: DNS through aiohttp's resolver interface (the same resolver,
and the same seam for tests), Happy Eyeballs across addresses (`aiohappyeyeballs`, as
aiohttp), TLS with the target's context, each phase timed, the peer certificate read,
and bodies bounded and decoded by `BodyDecoder`. Responses are parsed by `httptools`
(llhttp, the parser Node.js uses), with the head, chunk framing and trailers bounded
here. A target's headers replace the defaults of the same name; credentials in the URL
are sent as Basic authentication; redirects are not followed (as before).

Failures are raised as the classes `probe.verdict.classify_exception` knows:
`ConnectFailedError` (DNS, refused, TLS), `ResponseParseError`, `ServerClosedError`;
a timeout is the caller's `asyncio.timeout`, and the connection is closed however the
exchange ends.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote, urlsplit

import aiohappyeyeballs
import httptools
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from probe.body import BodyDecoder
from probe.verdict import (
    BodyEncodingError,
    BodyTooLargeError,
    ConnectFailedError,
    ResponseParseError,
    ServerClosedError,
)
from runtime.tls import client_context

if TYPE_CHECKING:
    from probe.check import PhaseTimer

# The status line and headers, together: a server sending more before its body is refused
# (aiohttp's limits are 8,190 bytes per line; this bounds what httptools may buffer).
MAX_HEAD = 64 * 1024
# As aiohttp's connector: the next address is tried 250 ms after the previous one started.
HAPPY_EYEBALLS_DELAY = 0.25
USER_AGENT = "vigil-probe/0.1"
# Only the encodings BodyDecoder decodes are offered.
ACCEPT_ENCODING = "gzip, deflate"
_PATH_SAFE = "/%?=&;:@!$'()*+,~-._#[]"


@dataclass(slots=True)
class Answer:
    """What came back: the status and the decoded body.

    `body_error` is set instead of `body` when the body was too large or did not decode:
    the status still stands, and the caller decides what the body was needed for.
    """

    status: int
    body: bytes
    body_error: BodyTooLargeError | BodyEncodingError | None = None


class _Stop(Exception):
    """Raised from a parser callback to stop parsing; the reason is on the exchange."""


class _Exchange(asyncio.Protocol):
    """Sends one request when connected and reads one final answer."""

    def __init__(
        self, request: bytes, timer: PhaseTimer, limit: int, answer: asyncio.Future[Answer]
    ) -> None:
        self._request = request
        self._timer = timer
        self._limit = limit
        self._answer = answer
        # The parser calls back into this object, a reference cycle: both go once settled
        # (`_settle`), so each check's objects are freed at once rather than left to the
        # garbage collector, whose young collections then took milliseconds (1,000 checks/s).
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        # Bytes read, body bytes among them, chunks: what is not body (the head, chunk
        # framing, trailers) is bounded, as httptools buffers a line without limit.
        self._wire = 0
        self._body_bytes = 0
        self._chunks = 0
        self._headers: dict[str, str] = {}
        self._status = 0
        self._final = False  # the final (non-1xx) answer's headers are in
        self._complete = False  # the final answer's message ended
        self._decoder: BodyDecoder | None = None
        self._body_error: BodyTooLargeError | BodyEncodingError | None = None
        self._failure: BaseException | None = None

    def connected(self) -> None:
        """Stamp the end of the TCP connect, before any TLS handshake."""
        self._timer.tcp_connected = time.perf_counter()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        timer = self._timer
        timer.conn_end = time.perf_counter()
        if timer.tcp_connected is None:  # connected in one call: no handshake between
            timer.tcp_connected = timer.conn_end
        tls = transport.get_extra_info("ssl_object")
        if isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
            # DER: the parsed form is empty when verification is off, where expiry matters most.
            der = tls.getpeercert(binary_form=True)
            timer.peer_der = der if isinstance(der, bytes) else None
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)
        timer.headers_sent = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if self._answer.done() or parser is None:
            return
        self._wire += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's _Stop arrives wrapped (HttpParserCallbackError): not a parse error.
            if not isinstance(exc.__context__, _Stop) and self._failure is None:
                where = "body" if self._final else "response"
                self._failure = ResponseParseError(str(exc) or type(exc).__name__, where=where)
        if self._failure is None and self._body_error is None and not self._complete:
            self._failure = self._oversized()
        self._settle()

    def _oversized(self) -> ResponseParseError | None:
        """A head, chunk framing or trailers beyond their bound (a hostile or broken server)."""
        framing = self._wire - self._body_bytes
        if not self._final and framing > MAX_HEAD:
            return ResponseParseError(
                f"status line and headers larger than {MAX_HEAD} bytes", where="response"
            )
        # Chunk-size lines and their CRLFs take a few bytes a chunk; extensions and
        # trailers, which the probe never reads, get one more MAX_HEAD in all.
        if self._final and framing > 2 * MAX_HEAD + 16 * self._chunks:
            return ResponseParseError(
                "chunk extensions and trailers larger than the probe reads", where="body"
            )
        return None

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer.done():
            return
        if self._failure is None and not self._complete and self._body_error is None:
            self._failure = self._ended_early(exc)
        self._settle()

    def _ended_early(self, exc: Exception | None) -> BaseException | None:
        """The connection ended before the answer did: an error, or the end of its body."""
        if not self._final:
            reason = f": {exc}" if exc is not None else ""
            return ServerClosedError(f"server closed the connection before answering{reason}")
        # Any Transfer-Encoding is `chunked` here (on_headers_complete refuses the others).
        framed = "content-length" in self._headers or "transfer-encoding" in self._headers
        if exc is None and not framed:
            self._complete = True  # a body delimited by the end of the connection
            return None
        got = f"connection closed before the whole body arrived ({exc or 'end of stream'})"
        return ServerClosedError(got)

    def _settle(self) -> None:
        """Resolve the answer once known, and close the connection."""
        if self._answer.done():
            return
        if self._failure is not None:
            self._answer.set_exception(self._failure)
        elif self._body_error is not None or self._complete:
            self._timer.done = time.perf_counter()
            body = b""
            if self._body_error is None and self._decoder is not None:
                try:
                    body = self._decoder.finish()
                except BodyEncodingError as exc:
                    self._body_error = exc
            self._answer.set_result(Answer(self._status, body, self._body_error))
        else:
            return
        self._parser = None
        if self._transport is not None:
            # Nothing more to send or read: no TLS close_notify exchange, which a peer that
            # never answers would hold open for asyncio's 30 s shutdown timeout.
            self._transport.abort()
            self._transport = None

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._final:
            return  # a trailer: never read
        # Last one wins; the probe reads the framing headers and Content-Encoding only.
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        # Called from inside `feed_data`, so the parser is there.
        status = self._parser.get_status_code() if self._parser is not None else 0
        if 100 <= status < 200 and status != 101:
            self._headers = {}  # an interim answer (100 Continue, 103 Early Hints)
            return
        self._status = status
        self._final = True
        self._timer.response = time.perf_counter()
        coding = self._headers.get("transfer-encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            # gzip or deflate as a transfer coding, or chunked not last (the body would run
            # to the end of the connection): nothing servers send to a client that never
            # offered TE.
            self._failure = ResponseParseError(
                f"unsupported Transfer-Encoding {coding[:40]!r}", where="response"
            )
            raise _Stop
        try:
            self._decoder = _decoder(self._headers, self._limit, status)
        except (BodyTooLargeError, BodyEncodingError) as exc:
            self._body_error = exc
            raise _Stop from exc
        if status == 101:
            self._complete = True
            raise _Stop

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if not self._final or self._decoder is None:
            return
        try:
            self._decoder.feed(body)
        except (BodyTooLargeError, BodyEncodingError) as exc:
            self._body_error = exc
            raise _Stop from exc
        if self._decoder.complete:
            self._complete = True  # a compressed stream that ended needs nothing after it
            raise _Stop

    def on_message_complete(self) -> None:
        if self._final:
            self._complete = True
            raise _Stop


def _decoder(headers: Mapping[str, str], limit: int, status: int) -> BodyDecoder:
    decoder = BodyDecoder(headers.get("content-encoding", ""), limit)
    length = headers.get("content-length", "")
    # 204 and 304 never have a body, whatever length they announce (that of the resource).
    if status not in (204, 304) and length.isdigit():
        decoder.refuse_announced(int(length))  # announced too large: read none of it
    return decoder


def _bad_name() -> socket.gaierror:
    return socket.gaierror(socket.EAI_NONAME, "not a valid host name")


@functools.lru_cache(maxsize=4096)
def _ip_family(host: str) -> socket.AddressFamily | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _url_parts(url: str) -> tuple[str, dict[str, str], str, int, bool]:
    """The request line, the default headers (lower-case name: line), host, port, TLS."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:80]!r}")
    tls = parts.scheme == "https"
    host = parts.hostname
    port = parts.port or (443 if tls else 80)
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE)
    try:
        name = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ConnectFailedError(host, port, _bad_name(), dns=True) from exc
    if _ip_family(host) == socket.AF_INET6:
        name = f"[{host}]"
    if parts.port is not None and parts.port != (443 if tls else 80):
        name = f"{name}:{port}"
    defaults = {
        "host": f"Host: {name}",
        "user-agent": f"User-Agent: {USER_AGENT}",
        "accept": "Accept: */*",
        "accept-encoding": f"Accept-Encoding: {ACCEPT_ENCODING}",
    }
    if parts.username is not None:
        # As aiohttp did with credentials in the URL: Basic authentication.
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        defaults["authorization"] = "Authorization: Basic " + base64.b64encode(
            secret.encode("utf-8")
        ).decode("ascii")
    return f"GET {target} HTTP/1.1", defaults, host, port, tls


def request_bytes(url: str, headers: Mapping[str, str]) -> tuple[bytes, str, int, bool]:
    """The request's bytes for `url`, its host, port and whether it is TLS.

    A header in `headers` replaces the default of the same name (`Host` for a virtual host,
    `Accept-Encoding`, `Authorization` over credentials in the URL); `Connection` is always
    `close`, as each check has a connection of its own.

    Raises:
        ValueError: not an http(s) URL, or a header with a line break or NUL in it.
    """
    request_line, defaults, host, port, tls = _url_parts(url)
    lines = dict(defaults)
    for key, value in headers.items():
        if any(c in key or c in value for c in "\r\n\0") or ":" in key:
            raise ValueError(f"header {key[:40]!r} has a line break, NUL or colon in it")
        lines[key.lower()] = f"{key}: {value}"
    lines["connection"] = "Connection: close"  # whatever the target's headers said
    text = "\r\n".join((request_line, *lines.values())) + "\r\n\r\n"
    return text.encode("utf-8"), host, port, tls


class LeanClient:
    """GETs on fresh connections; `resolver` is aiohttp's interface (the system's by default)."""

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._resolver = resolver
        # Built now, not inside a check's timed TLS phase (loading the CA bundle takes ~50 ms).
        self._default = client_context()
        self._insecure = client_context(insecure=True)  # tls_verify: false

    async def close(self) -> None:
        """Release the resolver."""
        if self._resolver is not None:
            await self._resolver.close()

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _context(self, tls: ssl.SSLContext | bool) -> ssl.SSLContext:
        if isinstance(tls, ssl.SSLContext):
            return tls
        return self._insecure if tls is False else self._default

    async def _addresses(self, host: str, port: int, timer: PhaseTimer) -> list[Any]:
        family = _ip_family(host)
        if family is not None:
            address = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
        if self._resolver is None:
            self._resolver = DefaultResolver()
        timer.dns_start = time.perf_counter()
        try:
            found = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise ConnectFailedError(host, port, exc, dns=True) from exc
        except UnicodeError as exc:  # an empty or over-long label: the idna codec refuses it
            raise ConnectFailedError(host, port, _bad_name(), dns=True) from exc
        timer.dns_end = time.perf_counter()
        infos = []
        for r in found:
            six = r["family"] == socket.AF_INET6
            address = (r["host"], r["port"], 0, 0) if six else (r["host"], r["port"])
            infos.append((r["family"], socket.SOCK_STREAM, r["proto"], "", address))
        if not infos:  # a resolver that answers with nothing: the name has no address
            nothing = socket.gaierror(socket.EAI_NONAME, "no address for the name")
            raise ConnectFailedError(host, port, nothing)
        return infos

    async def _connect_in_two_steps(
        self,
        exchange: _Exchange,
        infos: list[Any],
        host: str,
        port: int,
        context: ssl.SSLContext | None,
    ) -> asyncio.BaseTransport:
        """Happy Eyeballs over `infos`, then the TLS handshake: connect and TLS timed apart."""
        try:
            sock = await aiohappyeyeballs.start_connection(
                infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
            )
        except OSError as exc:
            raise ConnectFailedError(host, port, exc) from exc
        exchange.connected()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: exchange,
                sock=sock,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
        except TimeoutError:
            sock.close()
            raise  # asyncio's own handshake timeout (60 s): a timeout, not a refusal
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            sock.close()
            raise ConnectFailedError(host, port, exc) from exc
        except BaseException:
            sock.close()
            raise
        return transport

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        tls: ssl.SSLContext | bool,
        timer: PhaseTimer,
        limit: int,
    ) -> Answer:
        """GET `url` on a new connection and read its answer, the body up to `limit` bytes.

        Raises:
            ConnectFailedError: DNS, the TCP connect or the TLS handshake failed.
            ResponseParseError: the answer is not HTTP as the probe reads it.
            ServerClosedError: the connection ended before the answer did.
            ValueError: a URL or header the request cannot carry.
        """
        request, host, port, is_tls = request_bytes(url, headers)
        loop = asyncio.get_running_loop()
        timer.conn_start = time.perf_counter()
        infos = await self._addresses(host, port, timer)
        answer: asyncio.Future[Answer] = loop.create_future()
        exchange = _Exchange(request, timer, limit, answer)
        transport: asyncio.BaseTransport
        if not is_tls and len(infos) == 1:
            # One address and no handshake to time apart: the loop connects in one call.
            family, _type, _proto, _name, address = infos[0]
            try:
                transport, _ = await loop.create_connection(
                    lambda: exchange, host=address[0], port=address[1], family=family
                )
            except OSError as exc:
                raise ConnectFailedError(host, port, exc) from exc
        else:
            context = self._context(tls) if is_tls else None
            transport = await self._connect_in_two_steps(exchange, infos, host, port, context)
        try:
            return await answer
        finally:
            if not transport.is_closing():  # cancelled (the check's timeout): read no more
                cast(asyncio.Transport, transport).abort()
