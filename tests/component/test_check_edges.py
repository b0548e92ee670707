"""Edge cases of a check that a real server cannot easily stage, with aioresponses."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from yarl import URL

from probe.app import checker_for
from probe.check import MAX_BODY_BYTES, Checker
from probe.config import ProbeConfig, TargetConfig
from wire.result import ErrorKind, VersionErrorKind

BASE = "http://api.test"
HEALTH = BASE + "/api/health/ping"
VERSION = BASE + "/api/system/version"
TARGET = TargetConfig(name="api", url=BASE, interval=2, timeout=1)


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    config = ProbeConfig(region="eu-west", probe_id="eu-west-1", targets=[TARGET])
    async with checker_for(config, "1" * 32) as c:
        yield c


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


async def test_oversized_body_is_capped(checker: Checker, mocked: aioresponses) -> None:
    """A huge health body is read only up to the cap and judged on that."""
    mocked.get(HEALTH, status=200, body=b"x" * (MAX_BODY_BYTES * 4))
    mocked.get(VERSION, status=200, payload={"current": "1"})
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.INVALID_BODY


async def test_certificate_error_raised_by_the_client(
    checker: Checker, mocked: aioresponses
) -> None:
    """A certificate error surfacing from aiohttp is a `tls` failure."""
    key = ConnectionKey("api.test", 443, True, True, None, None, None)
    exc = aiohttp.ClientConnectorCertificateError(key, ssl.SSLCertVerificationError("expired"))
    mocked.get(HEALTH, exception=exc)
    mocked.get(VERSION, exception=exc)
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.TLS
    assert result.version_error is VersionErrorKind.TLS


async def test_read_timeout_raised_by_the_client(checker: Checker, mocked: aioresponses) -> None:
    """The client's own read timeout is a `timeout` failure."""
    mocked.get(HEALTH, exception=aiohttp.SocketTimeoutError("read"))
    mocked.get(VERSION, exception=TimeoutError())
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.version_error is VersionErrorKind.TIMEOUT


async def test_disconnect_mid_response(checker: Checker, mocked: aioresponses) -> None:
    """A server that hangs up mid-answer is a `connect` failure."""
    mocked.get(HEALTH, exception=aiohttp.ServerDisconnectedError())
    mocked.get(VERSION, status=200, payload={"current": "1"})
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.CONNECT
    assert result.version == "1"


async def test_304_without_a_cached_version(checker: Checker, mocked: aioresponses) -> None:
    """A 304 the probe never asked for cannot give a version; it is an unexpected status."""
    mocked.get(HEALTH, status=200, payload={"status": "ok"})
    mocked.get(VERSION, status=304)
    result = await checker.run(TARGET, time.time())
    assert result.ok
    assert result.version is None
    assert result.version_error is VersionErrorKind.HTTP_STATUS


async def test_redirect_is_not_followed(checker: Checker, mocked: aioresponses) -> None:
    """A redirect is judged as the status it is, not followed to another page."""
    mocked.get(HEALTH, status=302, headers={"Location": "http://elsewhere.test/"})
    mocked.get(VERSION, status=200, payload={"version": "2"})
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.HTTP_STATUS
    assert result.status_code == 302
    assert result.version == "2"


async def test_version_server_error(checker: Checker, mocked: aioresponses) -> None:
    """A 500 from the version endpoint is `http_status`, health unaffected."""
    mocked.get(HEALTH, status=200, payload={"status": "ok"})
    mocked.get(VERSION, status=500)
    result = await checker.run(TARGET, time.time())
    assert result.ok
    assert result.version_error is VersionErrorKind.HTTP_STATUS


KEY = ConnectionKey("api.test", 80, False, True, None, None, None)


@pytest.mark.parametrize(
    ("health", "kind"),
    [
        ({"exception": TimeoutError()}, ErrorKind.TIMEOUT),
        (
            {"exception": aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name unknown"))},
            ErrorKind.DNS,
        ),
        (
            {"exception": aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "no"))},
            ErrorKind.CONNECT,
        ),
        (
            {"exception": aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake"))},
            ErrorKind.TLS,
        ),
        ({"status": 503, "payload": {"status": "error", "error": "db"}}, ErrorKind.HTTP_STATUS),
        ({"status": 200, "payload": {"status": "starting"}}, ErrorKind.BODY_MISMATCH),
        ({"status": 200, "body": "<html>"}, ErrorKind.INVALID_BODY),
    ],
)
async def test_every_failure_kind_through_the_client(
    checker: Checker, mocked: aioresponses, health: dict[str, object], kind: ErrorKind
) -> None:
    """Each failure kind, raised or answered through aiohttp's client, is classified."""
    mocked.get(HEALTH, **health)
    mocked.get(VERSION, status=200, payload={"current": "1"})
    result = await checker.run(TARGET, time.time())
    assert not result.ok
    assert result.error_kind is kind
    assert result.consecutive_failures == 1


async def test_version_401_and_304_through_the_client(
    checker: Checker, mocked: aioresponses
) -> None:
    """401 is `auth`; after a 200 with an ETag, a 304 keeps the cached version."""
    mocked.get(HEALTH, status=200, payload={"status": "ok"}, repeat=True)
    mocked.get(VERSION, status=401)
    assert (await checker.run(TARGET, time.time())).version_error is VersionErrorKind.AUTH
    mocked.get(VERSION, status=200, payload={"current": "3.8.34"}, headers={"ETag": '"v1"'})
    assert (await checker.run(TARGET, time.time())).version == "3.8.34"
    mocked.get(VERSION, status=304, headers={"ETag": '"v1"'})
    result = await checker.run(TARGET, time.time())
    assert result.version == "3.8.34"
    assert result.version_error is None
    sent = mocked.requests[("GET", URL(VERSION))][-1]
    assert sent.kwargs["headers"]["If-None-Match"] == '"v1"'
