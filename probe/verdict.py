"""Pure judgement of one check: classify failures, judge bodies, count streaks."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from typing import NamedTuple

import aiohttp

from wire.result import MAX_ERROR_CHARS, MAX_STREAK, MAX_VERSION_CHARS, ErrorKind, VersionErrorKind


class Failure(NamedTuple):
    """A classified failure: its kind and a short, bounded description."""

    kind: ErrorKind
    error: str


def short(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Clip text to the wire's bound, on one line."""
    text = " ".join(text.split())
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


def classify_exception(exc: BaseException) -> Failure:
    """Map an exception from a check to exactly one error kind.

    Order matters: aiohttp's TLS and DNS errors are subclasses of its connect error, and its
    timeouts are subclasses of both `asyncio.TimeoutError` and `aiohttp.ClientError`.
    """
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Failure(ErrorKind.TIMEOUT, short(f"timed out: {exc}" if str(exc) else "timed out"))
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
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        # Refused, reset, disconnected mid-response, broken payload: the network path failed.
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
    useful thing an operator can read at 3 a.m., so it is carried into the failure.
    """
    if status != expected_status:
        detail = ""
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
                detail = f": {parsed['error']}"
        except ValueError:
            pass
        return Failure(
            ErrorKind.HTTP_STATUS, short(f"HTTP {status}, expected {expected_status}{detail}")
        )
    if json_field is None:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
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
    except ValueError:
        return None, VersionErrorKind.INVALID_BODY
    for name in (field, "version"):
        try:
            value = _field(parsed, name)
        except KeyError:
            continue
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text and len(text) <= MAX_VERSION_CHARS:
                return text, None
        return None, VersionErrorKind.INVALID_BODY
    return None, VersionErrorKind.INVALID_BODY


def version_error_kind(failure: Failure) -> VersionErrorKind:
    """The version check's kind for a transport failure of the version request."""
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
