"""Failure classification, body judgement, version parsing and streaks."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from probe.verdict import Streak, classify_exception, judge_health, parse_version, short
from wire.result import MAX_ERROR_CHARS, ErrorKind, VersionErrorKind

KEY = ConnectionKey("api.example.com", 443, True, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), ErrorKind.TIMEOUT),
        (aiohttp.ServerTimeoutError("read"), ErrorKind.TIMEOUT),
        (aiohttp.ConnectionTimeoutError("connect"), ErrorKind.TIMEOUT),
        (aiohttp.ClientConnectorDNSError(KEY, socket.gaierror(-2, "nope")), ErrorKind.DNS),
        (aiohttp.ClientConnectorError(KEY, socket.gaierror(-3, "again")), ErrorKind.DNS),
        (
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")),
            ErrorKind.CONNECT,
        ),
        (
            aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("bad")),
            ErrorKind.TLS,
        ),
        (aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError("handshake")), ErrorKind.TLS),
        (aiohttp.ServerDisconnectedError(), ErrorKind.CONNECT),
        (aiohttp.ClientPayloadError("truncated"), ErrorKind.CONNECT),
        (ConnectionResetError(104, "reset"), ErrorKind.CONNECT),
        (ValueError("bug"), ErrorKind.INTERNAL),
    ],
)
def test_classify_exception(exc: BaseException, kind: ErrorKind) -> None:
    """Each exception maps to exactly one error kind."""
    failure = classify_exception(exc)
    assert failure.kind is kind
    assert 0 < len(failure.error) <= MAX_ERROR_CHARS


def test_connector_errors_read_well() -> None:
    """Connect errors name host, port and reason, not an SSL context repr."""
    exc = aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused"))
    assert (
        classify_exception(exc).error == "cannot connect to api.example.com:443: Connection refused"
    )


@pytest.mark.parametrize(
    ("status", "body", "kwargs", "kind", "text"),
    [
        (200, b'{"status":"ok"}', {}, None, None),
        (
            503,
            b'{"status":"error","error":"db down"}',
            {},
            ErrorKind.HTTP_STATUS,
            "HTTP 503, expected 200: db down",
        ),
        (500, b"<html>", {}, ErrorKind.HTTP_STATUS, "HTTP 500, expected 200"),
        (200, b'{"status":"degraded"}', {}, ErrorKind.BODY_MISMATCH, "status is 'degraded'"),
        (200, b'{"ok":true}', {}, ErrorKind.BODY_MISMATCH, "no field 'status'"),
        (200, b"[1,2]", {}, ErrorKind.BODY_MISMATCH, "no field 'status'"),
        (200, b"<html>", {}, ErrorKind.INVALID_BODY, "not JSON"),
        (200, b"<html>", {"json_field": None}, None, None),
        (204, b"", {"expected_status": 204, "json_field": None}, None, None),
        (200, b'{"a":{"b":1}}', {"json_field": "a.b", "equals": 1}, None, None),
    ],
)
def test_judge_health(
    status: int, body: bytes, kwargs: dict[str, Any], kind: ErrorKind | None, text: str | None
) -> None:
    """Status first, then JSON, then the asserted field."""
    args: dict[str, Any] = {"expected_status": 200, "json_field": "status", "equals": "ok"}
    args.update(kwargs)
    failure = judge_health(status, body, **args)
    if kind is None:
        assert failure is None
    else:
        assert failure is not None
        assert failure.kind is kind
        assert text is not None
        assert text in failure.error


@pytest.mark.parametrize(
    ("status", "body", "version", "error"),
    [
        (200, b'{"current":"3.8.34","latest":"3.9.0"}', "3.8.34", None),
        (200, b'{"version":"1.2"}', "1.2", None),
        (200, b'{"current":38}', "38", None),
        (401, b"", None, VersionErrorKind.AUTH),
        (403, b"", None, VersionErrorKind.AUTH),
        (500, b"", None, VersionErrorKind.HTTP_STATUS),
        (200, b"nope", None, VersionErrorKind.INVALID_BODY),
        (200, b'{"other":1}', None, VersionErrorKind.INVALID_BODY),
        (200, b'{"current":{"x":1}}', None, VersionErrorKind.INVALID_BODY),
        (200, b'{"current":"' + b"9" * 65 + b'"}', None, VersionErrorKind.INVALID_BODY),
    ],
)
def test_parse_version(
    status: int, body: bytes, version: str | None, error: VersionErrorKind | None
) -> None:
    """The version comes from `current`, else `version`; 401/403 are `auth`."""
    assert parse_version(status, body, "current") == (version, error)


def test_streaks() -> None:
    """A success resets failures and vice versa."""
    s = Streak()
    for ok in (False, False, False):
        s = s.after(ok)
    assert s == Streak(3, 0)
    s = s.after(True).after(True)
    assert s == Streak(0, 2)
    assert s.after(False) == Streak(1, 0)


def test_short_bounds_text() -> None:
    """Long or multi-line error text is clipped to one bounded line."""
    text = short("a\nb   c" + "x" * 1000)
    assert "\n" not in text
    assert len(text) == MAX_ERROR_CHARS
