"""Pure judgement of one check: classify failures, judge bodies, count streaks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from typing import NamedTuple

import aiohttp
from aiohttp import http_exceptions

from wire.result import MAX_ERROR_CHARS, MAX_STREAK, MAX_VERSION_CHARS, ErrorKind, VersionErrorKind


class BodyTooLargeError(Exception):
    """The body is larger than the target's `max_body`; reading stopped there."""

    def __init__(self, limit: int, *, encoded: bool = False) -> None:
        self.limit = limit
        how = "as sent" if encoded else "decompressed"
        super().__init__(f"body larger than max_body ({limit} bytes {how}); reading stopped")


class BodyEncodingError(Exception):
    """The body's Content-Encoding is unsupported, or its data does not decode."""


class ConnectFailedError(OSError):
    """DNS, the TCP connect or the TLS handshake of a check's own connection failed."""

    def __init__(self, host: str, port: int, cause: BaseException, *, dns: bool = False) -> None:
        if isinstance(cause, ssl.SSLError | socket.gaierror) or not isinstance(cause, OSError):
            reason = str(cause) if not isinstance(cause, socket.gaierror) else cause.strerror
        elif cause.errno:
            # The system's words for it ("Connection refused"), the same on every loop:
            # asyncio's own text is "Connect call failed (...)", uvloop's the system's.
            reason = os.strerror(cause.errno)
        else:
            reason = cause.strerror or str(cause)
        super().__init__(f"cannot connect to {host}:{port}: {reason or type(cause).__name__}")
        self.host = host
        self.port = port
        self.cause = cause
        # Raised while resolving the name: a resolver's error is `dns` whatever its class
        # (aiohttp's AsyncResolver raises a plain OSError, as its connector then reports).
        self.dns = dns or isinstance(cause, socket.gaierror)


class ResponseParseError(Exception):
    """The answer is not HTTP/1.x as the probe reads it; `where`: `response` or `body`."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


class ServerClosedError(ConnectionError):
    """The connection ended before the answer (or its body) did."""


class Failure(NamedTuple):
    """A classified failure: its kind and a short, bounded description."""

    kind: ErrorKind
    error: str


def short(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Clip text to the wire's bound, on one line, in UTF-8.

    A lone surrogate (a JSON body's escaped U+D800) is replaced: the wire model refuses it, and
    a result that cannot be built is a failure nobody hears of.
    """
    text = " ".join(text.split()).encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Its str() embeds the repr of the SSL context; the host and the OS error are what count.
        os_error = exc.os_error
        reason = os_error.strerror or str(os_error) or type(os_error).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            reason = str(exc.certificate_error)
        return short(f"cannot connect to {exc.host}:{exc.port}: {reason}")
    cause = exc.__cause__ or exc.__context__
    detail = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in detail:
        detail = f"{detail}: {cause}"
    return short(detail)


def _parse_detail(message: str) -> str:
    # aiohttp's parser messages quote the bad line and point at it with a caret line.
    lines = [line for line in message.splitlines() if line.strip() not in ("", "^")]
    return " ".join(lines) or "malformed response"


def _parse_failure(exc: BaseException) -> Failure | None:
    """The failure when aiohttp's parser rejected the answer or the body was cut short.

    aiohttp reports its own parse errors as `400, message: ...` (a ClientResponseError with
    status 400 from the status line or headers; a ClientPayloadError caused by a framing or
    encoding error from the body), which reads as if the server had answered 400. A body cut
    short by the connection closing is a network failure, not a parse error: `connect`.
    """
    if isinstance(exc, BodyEncodingError):
        return Failure(ErrorKind.PROTOCOL, short(f"probe could not decode the body: {exc}"))
    if isinstance(exc, ResponseParseError):
        return Failure(ErrorKind.PROTOCOL, short(f"probe could not parse the {exc.where}: {exc}"))
    if isinstance(exc, aiohttp.ClientResponseError):
        # The probe never calls raise_for_status: this is the status line or a header, or the
        # chunk framing when it arrived in the same read as the head (aiohttp's parser then
        # fails the whole response with a bare BadHttpMessage; only its text tells where).
        detail = _parse_detail(exc.message)
        where = "body" if "chunk" in detail.lower() else "response"
        return Failure(ErrorKind.PROTOCOL, short(f"probe could not parse the {where}: {detail}"))
    cause = exc.__cause__
    if isinstance(exc, aiohttp.ClientPayloadError) and isinstance(
        cause, http_exceptions.HttpProcessingError
    ):
        cut_short = isinstance(cause, http_exceptions.ContentLengthError) or (
            # Raised at end of stream: the same class as a malformed chunk, told apart by text.
            isinstance(cause, http_exceptions.TransferEncodingError)
            and cause.message.startswith("Not enough data")
        )
        if cut_short:
            detail = _parse_detail(cause.message)
            return Failure(
                ErrorKind.CONNECT,
                short(f"connection closed before the whole body arrived ({detail})"),
            )
        return Failure(
            ErrorKind.PROTOCOL,
            short(f"probe could not parse the body: {_parse_detail(cause.message)}"),
        )
    if isinstance(exc, http_exceptions.HttpProcessingError):
        return Failure(
            ErrorKind.PROTOCOL,
            short(f"probe could not parse the response: {_parse_detail(exc.message)}"),
        )
    return None


def classify_exception(exc: BaseException) -> Failure:
    """Map an exception from a check to exactly one error kind.

    Order matters: aiohttp's TLS and DNS errors are subclasses of its connect error, its
    timeouts are subclasses of both `asyncio.TimeoutError` and `aiohttp.ClientError`, and
    its parse errors are client errors too, classified by where they happened.
    """
    if isinstance(exc, BodyTooLargeError):
        return Failure(ErrorKind.BODY_TOO_LARGE, short(str(exc)))
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Failure(ErrorKind.TIMEOUT, short(f"timed out: {exc}" if str(exc) else "timed out"))
    if isinstance(exc, ConnectFailedError):
        cause = exc.cause
        if exc.dns:
            return Failure(ErrorKind.DNS, short(str(exc)))
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return Failure(ErrorKind.TLS, short(str(exc)))
        return Failure(ErrorKind.CONNECT, short(str(exc)))
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return Failure(ErrorKind.TLS, _describe(exc))
    if isinstance(exc, ssl.SSLError):
        return Failure(ErrorKind.TLS, _describe(exc))
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Failure(ErrorKind.DNS, _describe(exc))
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror):
        return Failure(ErrorKind.DNS, _describe(exc))
    if isinstance(exc, socket.gaierror):
        return Failure(ErrorKind.DNS, _describe(exc))
    parse = _parse_failure(exc)
    if parse is not None:
        return parse
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        # Refused, reset, disconnected before or during the answer: the network path failed.
        return Failure(ErrorKind.CONNECT, _describe(exc))
    return Failure(ErrorKind.INTERNAL, short(f"{type(exc).__name__}: {exc}"))


def _field(body: object, dotted: str) -> object:
    """Look up `a.b.c` in parsed JSON; KeyError when any step is missing."""
    value = body
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


# Field names real services put their error text under, in the order they are tried.
_ERROR_KEYS = ("error", "message", "detail")


def _error_text(value: object, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict) and depth < 2:
        for key in _ERROR_KEYS:
            text = _error_text(value.get(key), depth + 1)
            if text:
                code = value.get("code")
                if isinstance(code, str | int) and not isinstance(code, bool) and str(code):
                    return f"{text} ({str(code)[:40]})"
                return text
    return None


def error_detail(body: bytes) -> str | None:
    """The error text of a failed answer's body, or None when it has none worth reading.

    JSON bodies: `error` (a string, or an object with `message` or `detail`, with its `code`
    appended), then `message`, then `detail`; e.g. OmniRoute's
    `{"error":{"code":"AUTH_001","message":"Authentication required"}}` gives
    `Authentication required (AUTH_001)`. A short plain-text body is taken as it is; HTML
    pages are not.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # nesting deeper than Python's stack: not JSON to us
        parsed = None
    if isinstance(parsed, dict):
        text = _error_text(parsed)
        return short(text, 200) if text else None
    try:
        text = body[:400].decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not text or text.startswith(("<", "{", "[")):
        return None
    return short(text, 200)


def judge_health(
    status: int,
    body: bytes,
    *,
    expected_status: int,
    json_field: str | None,
    equals: object,
) -> Failure | None:
    """Judge a health response; None means healthy.

    The service answers 503 with `{"status":"error","error":"..."}`; its error text is the most
    useful thing an operator can read at 3 a.m., so it is carried into the failure (see
    `error_detail` for the shapes read).
    """
    if status != expected_status:
        detail = error_detail(body)
        suffix = f": {detail}" if detail else ""
        # The status leads, so clipping a long detail never loses it.
        return Failure(
            ErrorKind.HTTP_STATUS, short(f"HTTP {status}, expected {expected_status}{suffix}")
        )
    if json_field is None:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # nesting deeper than Python's stack: not JSON to us
        return Failure(ErrorKind.INVALID_BODY, short(f"body is not JSON: {body[:80]!r}"))
    try:
        actual = _field(parsed, json_field)
    except KeyError:
        return Failure(ErrorKind.BODY_MISMATCH, short(f"body has no field {json_field!r}"))
    if actual != equals:
        return Failure(
            ErrorKind.BODY_MISMATCH, short(f"{json_field} is {actual!r}, expected {equals!r}")
        )
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_version(
    status: int, body: bytes, field: str
) -> tuple[str | None, VersionErrorKind | None]:
    """Read the running version from the version endpoint's answer.

    `field` is tried first, then `version`; 401 and 403 are `auth`, a misconfigured key rather
    than an outage.
    """
    if status in (401, 403):
        return None, VersionErrorKind.AUTH
    if not 200 <= status < 300:
        return None, VersionErrorKind.HTTP_STATUS
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # nesting deeper than Python's stack: not JSON to us
        return None, VersionErrorKind.INVALID_BODY
    for name in (field, "version"):
        try:
            value = _field(parsed, name)
        except KeyError:
            continue
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            # A lone surrogate (JSON "\ud800") decodes to a str that is not UTF-8: it would
            # make the result unpublishable, and so silence the health check with it.
            if text and len(text) <= MAX_VERSION_CHARS and _utf8(text):
                return text, None
        return None, VersionErrorKind.INVALID_BODY
    return None, VersionErrorKind.INVALID_BODY


# Health kinds with no version counterpart: the answer came but could not be used.
_VERSION_KIND = {
    ErrorKind.PROTOCOL: VersionErrorKind.INVALID_BODY,
    ErrorKind.BODY_TOO_LARGE: VersionErrorKind.INVALID_BODY,
}


def version_error_kind(failure: Failure) -> VersionErrorKind:
    """The version check's kind for a transport failure of the version request."""
    if failure.kind in _VERSION_KIND:
        return _VERSION_KIND[failure.kind]
    try:
        return VersionErrorKind(failure.kind.value)
    except ValueError:
        return VersionErrorKind.INTERNAL


class Streak(NamedTuple):
    """Consecutive failures and successes of one target, as of its latest check."""

    failures: int = 0
    successes: int = 0

    def after(self, ok: bool) -> Streak:
        """The streak once a check with verdict `ok` is added; it saturates at the wire's bound."""
        if ok:
            return Streak(0, min(self.successes + 1, MAX_STREAK))
        return Streak(min(self.failures + 1, MAX_STREAK), 0)
