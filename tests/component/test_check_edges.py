"""Edge cases of a check, staged by a scripted local server or, where it cannot, aioresponses.

Answers come from a local server; errors raised inside aiohttp that a loopback server cannot
stage (certificate and handshake errors, the client's read timeout) come from aioresponses.
The checker runs on the probe's own sessions (`make_session`) with a resolver injected in
place of DNS, so `http://api.test` reaches the scripted server through the shipped aiohttp's
connector and trace hooks; nothing of aiohttp is patched for those tests.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from yarl import URL

from probe.check import Checker
from probe.config import TargetConfig
from tests.component.conftest import StaticResolver, injected_checker
from tests.conftest import Serve
from wire.result import ErrorKind, VersionErrorKind

HEALTH_PATH = "/api/health/ping"
VERSION_PATH = "/api/system/version"
BASE = "http://api.test"
HEALTH = BASE + HEALTH_PATH
VERSION = BASE + VERSION_PATH
TARGET = TargetConfig(name="api", url=BASE, interval=2, timeout=1)

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(
    status: int = 200,
    *,
    body: bytes = b"",
    json: object = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    async def answer(_request: web.Request) -> web.StreamResponse:
        if json is not None:
            return web.json_response(json, status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers)

    return answer


OK = reply(json={"status": "ok"})


async def hang_up(request: web.Request) -> web.StreamResponse:
    """The headers and the start of the body, then the connection closes."""
    response = web.StreamResponse(
        headers={"Content-Length": "100", "Content-Type": "application/json"}
    )
    await response.prepare(request)
    await response.write(b'{"status"')
    assert request.transport is not None
    request.transport.close()
    return response


async def hang_up_at_once(request: web.Request) -> web.StreamResponse:
    """The connection closes before any answer."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


def stall(seconds: float) -> Answer:
    async def answer(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response({"status": "ok"})

    return answer


class Script:
    """A target whose answers each test writes: per path, answers in turn, the last repeating."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Answer]] = {}
        self.headers: dict[str, list[Mapping[str, str]]] = {}
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._answer)

    def on(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.headers.setdefault(request.path, []).append(request.headers)
        queue = self.answers.get(request.path)
        if not queue:
            return web.Response(status=404)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return await answer(request)


@pytest.fixture
def resolver() -> StaticResolver:
    return StaticResolver()


@pytest.fixture
async def checker(resolver: StaticResolver) -> AsyncIterator[Checker]:
    async with injected_checker(resolver, region="eu-west", probe_id="eu-west-1") as c:
        yield c


@pytest.fixture
async def script(serve: Serve, resolver: StaticResolver) -> Script:
    """The scripted target, reached as http://api.test."""
    scripted = Script()
    port = URL(await serve(scripted.app)).port
    assert port is not None
    resolver.hosts["api.test"] = port
    return scripted


async def test_through_the_injected_session(checker: Checker, script: Script) -> None:
    """The injected resolver is timed as DNS, and every request carries the probe's headers."""
    script.on(HEALTH_PATH, OK)
    script.on(VERSION_PATH, reply(json={"current": "1"}))
    result = await checker.run(TARGET, time.time())
    assert result.ok, result.error
    assert result.version == "1"
    assert result.phases.dns is not None
    assert result.phases.connect is not None
    assert result.phases.ttfb is not None
    for path in (HEALTH_PATH, VERSION_PATH):
        assert script.headers[path][0]["X-Vigil-Region"] == "eu-west"


async def test_oversized_body_is_capped(checker: Checker, script: Script) -> None:
    """A health body over max_body is `body_too_large`, with the status it came with."""
    script.on(HEALTH_PATH, reply(body=b"x" * (TARGET.max_body * 4)))
    script.on(VERSION_PATH, reply(json={"current": "1"}))
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.BODY_TOO_LARGE
    assert result.status_code == 200
    assert result.version == "1"


async def test_disconnect_mid_response(checker: Checker, script: Script) -> None:
    """A server that hangs up mid-answer is a `connect` failure."""
    script.on(HEALTH_PATH, hang_up)
    script.on(VERSION_PATH, reply(json={"current": "1"}))
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.CONNECT
    assert result.version == "1"


async def test_304_without_a_cached_version(checker: Checker, script: Script) -> None:
    """A 304 the probe never asked for cannot give a version; it is an unexpected status."""
    script.on(HEALTH_PATH, OK)
    script.on(VERSION_PATH, reply(304))
    result = await checker.run(TARGET, time.time())
    assert result.ok
    assert result.version is None
    assert result.version_error is VersionErrorKind.HTTP_STATUS


async def test_redirect_is_not_followed(checker: Checker, script: Script) -> None:
    """A redirect is judged as the status it is, not followed to another page."""
    script.on(HEALTH_PATH, reply(302, headers={"Location": "http://elsewhere.test/"}))
    script.on(VERSION_PATH, reply(json={"version": "2"}))
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.HTTP_STATUS
    assert result.status_code == 302
    assert result.version == "2"


async def test_version_server_error(checker: Checker, script: Script) -> None:
    """A 500 from the version endpoint is `http_status`, health unaffected."""
    script.on(HEALTH_PATH, OK)
    script.on(VERSION_PATH, reply(500))
    result = await checker.run(TARGET, time.time())
    assert result.ok
    assert result.version_error is VersionErrorKind.HTTP_STATUS


@pytest.mark.parametrize(
    ("health", "kind"),
    [
        (reply(503, json={"status": "error", "error": "db"}), ErrorKind.HTTP_STATUS),
        (reply(200, json={"status": "starting"}), ErrorKind.BODY_MISMATCH),
        (reply(200, body=b"<html>"), ErrorKind.INVALID_BODY),
        (hang_up, ErrorKind.CONNECT),
        (hang_up_at_once, ErrorKind.CONNECT),
    ],
    ids=["503", "body-mismatch", "not-json", "hang-up-mid-body", "hang-up-at-once"],
)
async def test_every_answer_kind(
    checker: Checker, script: Script, health: Answer, kind: ErrorKind
) -> None:
    """Each failing answer, read through aiohttp's client, is classified."""
    script.on(HEALTH_PATH, health)
    script.on(VERSION_PATH, reply(json={"current": "1"}))
    result = await checker.run(TARGET, time.time())
    assert not result.ok
    assert result.error_kind is kind
    assert result.consecutive_failures == 1


async def test_unknown_name_is_dns(checker: Checker) -> None:
    """A name the resolver does not know is a `dns` failure, for both requests."""
    target = TargetConfig(name="api", url="http://unknown.test", interval=2, timeout=1)
    result = await checker.run(target, time.time())
    assert result.error_kind is ErrorKind.DNS
    assert result.version_error is VersionErrorKind.DNS


async def test_refused_is_connect(
    checker: Checker, resolver: StaticResolver, closed_port: int
) -> None:
    """A name that resolves to a port with nothing listening is a `connect` failure."""
    resolver.hosts["api.test"] = closed_port
    result = await checker.run(TARGET, time.time())
    assert result.error_kind is ErrorKind.CONNECT
    assert result.version_error is VersionErrorKind.CONNECT


async def test_stalled_answer_is_timeout(checker: Checker, script: Script) -> None:
    """An answer slower than the target's timeout is a `timeout` failure, bounded by it."""
    script.on(HEALTH_PATH, stall(1.0))
    script.on(VERSION_PATH, stall(1.0))
    target = TargetConfig(name="api", url=BASE, interval=2, timeout=0.2)
    result = await checker.run(target, time.time())
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.version_error is VersionErrorKind.TIMEOUT
    assert 150 <= result.duration_ms < 900


async def test_version_401_and_304_through_the_client(checker: Checker, script: Script) -> None:
    """401 is `auth`; after a 200 with an ETag, a 304 keeps the cached version."""
    script.on(HEALTH_PATH, OK)
    script.on(
        VERSION_PATH,
        reply(401),
        reply(json={"current": "3.8.34"}, headers={"ETag": '"v1"'}),
        reply(304, headers={"ETag": '"v1"'}),
    )
    assert (await checker.run(TARGET, time.time())).version_error is VersionErrorKind.AUTH
    assert (await checker.run(TARGET, time.time())).version == "3.8.34"
    result = await checker.run(TARGET, time.time())
    assert result.version == "3.8.34"
    assert result.version_error is None
    sent = script.headers[VERSION_PATH]
    assert "If-None-Match" not in sent[1]
    assert sent[2]["If-None-Match"] == '"v1"'


# Errors raised inside aiohttp that a loopback server cannot stage: aioresponses raises them
# from the injected session's requests. aiohttp carries the health check on pooled
# connections (`reuse_connections: true`) and every version request; a fresh connection's
# health check goes through probe/lean.py, whose failures tests/component/test_lean.py stages.
POOLED = TARGET.model_copy(update={"reuse_connections": True})


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


KEY = ConnectionKey("api.test", 80, False, True, None, None, None)


async def test_certificate_error_raised_by_the_client(
    checker: Checker, mocked: aioresponses
) -> None:
    """A certificate error surfacing from aiohttp is a `tls` failure."""
    key = ConnectionKey("api.test", 443, True, True, None, None, None)
    exc = aiohttp.ClientConnectorCertificateError(key, ssl.SSLCertVerificationError("expired"))
    mocked.get(HEALTH, exception=exc)
    mocked.get(VERSION, exception=exc)
    result = await checker.run(POOLED, time.time())
    assert result.error_kind is ErrorKind.TLS
    assert result.version_error is VersionErrorKind.TLS


async def test_handshake_error_raised_by_the_client(checker: Checker, mocked: aioresponses) -> None:
    """An SSL error during the handshake is a `tls` failure."""
    mocked.get(HEALTH, exception=aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "hs")))
    mocked.get(VERSION, status=200, payload={"current": "1"})
    result = await checker.run(POOLED, time.time())
    assert result.error_kind is ErrorKind.TLS
    assert result.consecutive_failures == 1


async def test_read_timeout_raised_by_the_client(checker: Checker, mocked: aioresponses) -> None:
    """The client's own read timeout is a `timeout` failure."""
    mocked.get(HEALTH, exception=aiohttp.SocketTimeoutError("read"))
    mocked.get(VERSION, exception=TimeoutError())
    result = await checker.run(POOLED, time.time())
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.version_error is VersionErrorKind.TIMEOUT
