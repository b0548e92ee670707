"""Every failure kind of a check, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from demo.target import STATE, make_app
from probe.check import Checker, TimedConnector
from probe.config import TargetConfig
from tests.conftest import Serve
from wire.result import ErrorKind, VersionErrorKind

API_KEY = "sk-test"
ROOT = Path(__file__).resolve().parents[2]


def target(url: str, **kw: Any) -> TargetConfig:
    fields: dict[str, Any] = {
        "name": "api",
        "url": url,
        "interval": 2,
        "timeout": 1,
        "version_auth_header": f"Bearer {API_KEY}",
    }
    fields.update(kw)
    return TargetConfig.model_validate(fields)


@pytest.fixture
def demo() -> web.Application:
    return make_app(api_key=API_KEY, version="3.8.34")


async def set_mode(app: web.Application, **kw: Any) -> None:
    from dataclasses import replace

    state = app[STATE]
    state.default = replace(state.default, **kw)


async def test_success_has_phases_version_and_streak(
    checker: Checker, serve: Serve, demo: web.Application
) -> None:
    """A healthy target gives ok, 200, the version, timed phases and a growing streak."""
    url = await serve(demo)
    first = await checker.run(target(url), time.time())
    second = await checker.run(target(url), time.time())
    assert first.ok
    assert first.status_code == 200
    assert first.error_kind is None
    assert first.version == "3.8.34"
    assert first.version_error is None
    assert first.phases.connect is not None
    assert first.phases.ttfb is not None
    assert first.phases.transfer is not None
    assert first.phases.tls is None  # plain http
    assert first.phases.dns is None  # an IP literal needs no lookup
    assert (first.seq, second.seq) == (1, 2)
    assert second.consecutive_successes == 2


async def test_hostname_measures_dns(checker: Checker, serve: Serve, demo: web.Application) -> None:
    """A target named by host name has a dns phase on every check (no DNS cache)."""
    url = (await serve(demo)).replace("127.0.0.1", "localhost")
    for _ in range(2):
        result = await checker.run(target(url), time.time())
        assert result.ok, result.error
        assert result.phases.dns is not None


async def test_fresh_connection_per_check(
    checker: Checker, serve: Serve, demo: web.Application
) -> None:
    """By default every check connects anew, so connect time is measured every time."""
    url = await serve(demo)
    for _ in range(3):
        result = await checker.run(target(url, version_path=None), time.time())
        assert result.phases.connect is not None


async def test_reused_connection_skips_connect(
    checker: Checker, serve: Serve, demo: web.Application
) -> None:
    """With reuse_connections a later check rides the pooled connection."""
    url = await serve(demo)
    t = target(url, version_path=None, reuse_connections=True)
    await checker.run(t, time.time())
    result = await checker.run(t, time.time())
    assert result.ok
    assert result.phases.connect is None


async def test_timeout(checker: Checker, serve: Serve, demo: web.Application) -> None:
    """A target slower than the timeout is a `timeout` failure, bounded by the timeout."""
    url = await serve(demo)
    # A passing check first: only a warm target's results can be marked slow.
    await checker.run(target(url, timeout="300ms", version_path=None), time.time())
    await set_mode(demo, mode="slow", delay_ms=3000)
    result = await checker.run(target(url, timeout="300ms", version_path=None), time.time())
    assert not result.ok
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.status_code is None
    assert 250 <= result.duration_ms < 2500
    assert result.slow


async def test_refused(checker: Checker, closed_port: int) -> None:
    """Nothing listening is a `connect` failure naming host and port."""
    result = await checker.run(target(f"http://127.0.0.1:{closed_port}"), time.time())
    assert result.error_kind is ErrorKind.CONNECT
    assert result.error is not None
    assert f"127.0.0.1:{closed_port}" in result.error
    assert result.version_error is VersionErrorKind.CONNECT
    assert result.consecutive_failures == 1


async def test_dns_failure(checker: Checker) -> None:
    """A name that does not resolve is a `dns` failure."""
    result = await checker.run(target("http://vigil-test.invalid"), time.time())
    assert result.error_kind is ErrorKind.DNS


async def test_tls_self_signed_is_refused(
    checker: Checker, serve: Serve, demo: web.Application, tls_server_context: ssl.SSLContext
) -> None:
    """A certificate from an unknown CA is a `tls` failure."""
    url = await serve(demo, tls_server_context)
    result = await checker.run(target(url), time.time())
    assert result.error_kind is ErrorKind.TLS
    assert result.error is not None
    assert "certificate" in result.error.lower()


async def test_tls_with_ca_file_measures_tls_and_expiry(
    checker: Checker,
    serve: Serve,
    demo: web.Application,
    tls_server_context: ssl.SSLContext,
    ca_file: Path,
) -> None:
    """With the CA configured, the check passes and reports TLS time and certificate expiry."""
    url = await serve(demo, tls_server_context)
    result = await checker.run(target(url, ca_file=ca_file), time.time())
    assert result.ok, result.error
    assert result.phases.tls is not None
    assert result.phases.connect is not None
    assert result.tls_not_after is not None
    assert result.tls_not_after > time.time()


def test_tested_aiohttp_is_the_shipped_one() -> None:
    """These tests run on the aiohttp the image installs, so what they prove holds there."""
    pins = {}
    for lock in ("lock.txt", "test-lock.txt"):
        pinned = re.search(r"^aiohttp==(\S+)", (ROOT / "requirements" / lock).read_text(), re.M)
        assert pinned is not None, f"requirements/{lock} pins no aiohttp"
        pins[lock] = pinned[1]
    assert pins["lock.txt"] == pins["test-lock.txt"], f"the locks disagree: {pins}; make lock"
    assert aiohttp.__version__ == pins["lock.txt"], (
        f"testing aiohttp {aiohttp.__version__}, shipping {pins['lock.txt']}: "
        "./scripts/bootstrap.sh --test installs the lock"
    )


async def test_connector_can_see_the_tcp_connect() -> None:
    """TimedConnector's private hook exists in this aiohttp; without it `tls` goes unmeasured."""
    connector = TimedConnector()
    try:
        assert connector.splits_tls, (
            f"aiohttp {aiohttp.__version__} has no TCPConnector._factory: probe/check.py "
            "TimedConnector cannot time the TLS handshake apart from the TCP connect"
        )
    finally:
        await connector.close()


async def test_slow_handshake_lands_in_tls_not_connect(
    checker: Checker, serve: Serve, demo: web.Application, tls_ca: trustme.CA, ca_file: Path
) -> None:
    """A server slow to answer the TLS hello makes `tls` long and leaves `connect` short.

    Fails if aiohttp stops calling the connector's protocol factory between the TCP connect
    and the handshake, even where `_factory` still exists.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)

    def slow_hello(_sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        time.sleep(0.1)  # blocks the test's loop mid-handshake: the client waits as well

    context.sni_callback = slow_hello
    url = await serve(demo, context)
    for _ in range(2):  # a fresh connection, so a fresh handshake, every check
        result = await checker.run(target(url, ca_file=ca_file, version_path=None), time.time())
        assert result.ok, result.error
        assert result.phases.tls is not None, "tls unmeasured: see TimedConnector"
        assert result.phases.connect is not None
        assert result.phases.tls >= 95, result.phases
        assert result.phases.connect < 50, result.phases


async def test_tls_verify_off_accepts_self_signed(
    checker: Checker, serve: Serve, demo: web.Application, tls_server_context: ssl.SSLContext
) -> None:
    """tls_verify: false checks a self-signed target without failing on its certificate."""
    url = await serve(demo, tls_server_context)
    result = await checker.run(target(url, tls_verify=False), time.time())
    assert result.ok, result.error


@pytest.mark.parametrize(
    ("mode", "kind", "status", "text"),
    [
        ("fail", ErrorKind.HTTP_STATUS, 503, "database connection failed"),
        ("badbody", ErrorKind.BODY_MISMATCH, 200, "status is 'degraded'"),
        ("invalid", ErrorKind.INVALID_BODY, 200, "not JSON"),
    ],
)
async def test_bad_answers(
    checker: Checker,
    serve: Serve,
    demo: web.Application,
    mode: str,
    kind: ErrorKind,
    status: int,
    text: str,
) -> None:
    """503, a wrong body and a non-JSON body each have their own kind."""
    url = await serve(demo)
    await set_mode(demo, mode=mode)
    result = await checker.run(target(url), time.time())
    assert not result.ok
    assert result.error_kind is kind
    assert result.status_code == status
    assert result.error is not None
    assert text in result.error


async def test_version_401_is_auth_and_not_a_failure(
    checker: Checker, serve: Serve, demo: web.Application
) -> None:
    """A wrong API key shows as version_error auth; health stays ok."""
    url = await serve(demo)
    result = await checker.run(target(url, version_auth_header="Bearer wrong"), time.time())
    assert result.ok
    assert result.version is None
    assert result.version_error is VersionErrorKind.AUTH


async def test_version_uses_etag(checker: Checker, serve: Serve, demo: web.Application) -> None:
    """An unchanged version is fetched with If-None-Match and costs a 304; a change is seen."""
    url = await serve(demo)
    t = target(url)
    assert (await checker.run(t, time.time())).version == "3.8.34"
    second = await checker.run(t, time.time())
    assert second.version == "3.8.34"
    assert demo[STATE].version_not_modified == 1
    await set_mode(demo, version="3.8.35")
    assert (await checker.run(t, time.time())).version == "3.8.35"


async def test_version_check_can_be_off(
    checker: Checker, serve: Serve, demo: web.Application
) -> None:
    """version_path: null makes no version request."""
    url = await serve(demo)
    result = await checker.run(target(url, version_path=None), time.time())
    assert result.version is None
    assert result.version_error is None
    assert demo[STATE].version_requests == 0


async def test_probe_identifies_itself(checker: Checker, serve: Serve) -> None:
    """Requests carry the region and probe id, and the target's extra headers."""
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/api/health/ping", handler)
    url = await serve(app)
    await checker.run(target(url, version_path=None, headers={"X-Team": "platform"}), time.time())
    assert seen["X-Vigil-Region"] == "us-east"
    assert seen["X-Vigil-Probe"] == "us-east-1"
    assert seen["X-Team"] == "platform"


async def test_latency_budget_marks_slow(
    checker: Checker, serve: Serve, demo: web.Application
) -> None:
    """A passing check over the latency budget, after a passing one, is ok but marked slow."""
    url = await serve(demo)
    await checker.run(target(url, latency_budget="10ms"), time.time())
    await set_mode(demo, mode="slow", delay_ms=80)
    result = await checker.run(target(url, latency_budget="10ms"), time.time())
    assert result.ok
    assert result.slow
