"""The aggregator's HTTP surface over real sockets: headers, token handling, slow clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import resource
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig
from aggregator.edges.http import make_app
from runtime.http import ConnectionLimits, serve
from tests.conftest import Serve
from tests.polling import wait_until, wait_until_async
from tests.rulekit import REGIONS, T0, RegionProbe, online
from wire.topics import presence_topic, result_topic

TOKEN = "tok-7c21"
INJECTION = "x; Domain=example.com; Max-Age=99999999"
# A request head that never ends: the blank line that would finish it is never sent.
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def aggregator(tokens: list[str]) -> Aggregator:
    """An aggregator that has heard one target from every region, so the page has a row."""
    now = T0
    config = AggregatorConfig.model_validate({"regions": list(REGIONS), "api": {"tokens": tokens}})
    agg = build(config, CollectorRegistry(), None, clock=lambda: now)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    for region in REGIONS:
        presence = online(region, at=now)
        agg.pipeline.handle(presence_topic(region, f"{region}-1"), presence.to_json(), False)
        probe = RegionProbe(region)
        for i in range(3):
            result = probe.check(i != 1, now + i)
            agg.pipeline.handle(result_topic(region, "api"), result.to_json(), False)
    return agg


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(
        TestServer(make_app(aggregator([TOKEN]).http_deps()), host="127.0.0.1")
    ) as c:
        yield c


def set_cookies(resp: aiohttp.ClientResponse) -> list[str]:
    return resp.headers.getall("Set-Cookie", [])


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/", BEARER, 200),
        ("/targets/api", BEARER, 200),
        ("/targets/nope", BEARER, 404),
        ("/", {}, 401),
        ("/api/v1/status", BEARER, 200),
        ("/api/v1/openapi.json", BEARER, 200),
        ("/api/v1/targets/nope", BEARER, 404),
        ("/api/v1/status", {}, 401),
        ("/healthz", {}, 200),
        ("/metrics", {}, 200),
    ],
)
async def test_every_response_forbids_framing_sniffing_caching_and_referrers(
    client: TestClient[Any, Any], path: str, headers: dict[str, str], status: int
) -> None:
    """Pages, API answers, errors and machine endpoints all carry the protective headers."""
    resp = await client.get(path, headers=headers)
    assert resp.status == status
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    csp = [d.strip() for d in resp.headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert not any("unsafe" in d for d in csp)


@pytest.mark.parametrize("path", ["/", "/targets/api"])
async def test_page_policy_allows_exactly_its_own_inline_style(
    client: TestClient[Any, Any], path: str
) -> None:
    """The page runs no script and its one inline style is allowed by hash, nothing else."""
    resp = await client.get(path, headers=BEARER)
    html = await resp.text()
    assert "<script" not in html
    assert " style=" not in html  # an inline style attribute would need 'unsafe-inline'
    styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    csp = [d.strip() for d in resp.headers["Content-Security-Policy"].split(";")]
    assert f"style-src 'sha256-{digest}'" in csp
    assert not any(d.startswith("script-src") for d in csp)


async def test_api_refuses_a_query_token_even_a_valid_one(client: TestClient[Any, Any]) -> None:
    """`?token=` on /api/v1 is never a credential; only `Authorization: Bearer` is."""
    resp = await client.get("/api/v1/status", params={"token": TOKEN})
    assert resp.status == 401
    assert set_cookies(resp) == []
    assert (await client.get("/api/v1/status", headers=BEARER)).status == 200


async def test_api_does_not_take_the_page_cookie(client: TestClient[Any, Any]) -> None:
    """The sign-in cookie opens pages only; the page has no script that would call the API."""
    client.session.cookie_jar.update_cookies({"vigil_token": TOKEN})
    assert (await client.get("/")).status == 200
    assert (await client.get("/api/v1/status")).status == 401


@pytest.mark.parametrize("path", ["/", "/targets/api"])
async def test_injected_query_token_never_reaches_a_cookie(
    client: TestClient[Any, Any], path: str
) -> None:
    """A wrong `?token=` with cookie attributes in it is refused and sets nothing."""
    client.session.cookie_jar.update_cookies({"vigil_token": TOKEN})
    resp = await client.get(path, params={"token": INJECTION}, allow_redirects=False)
    assert resp.status == 401
    assert set_cookies(resp) == []
    # The cookie the browser holds is untouched: the page still opens with it.
    assert (await client.get(path)).status == 200


async def test_wrong_query_token_is_401_and_sets_no_cookie(client: TestClient[Any, Any]) -> None:
    """A page opened with a wrong token (or two tokens) says 401 and signs nobody in."""
    for params in ({"token": "nope"}, [("token", TOKEN), ("token", TOKEN)]):
        resp = await client.get("/", params=params, allow_redirects=False)
        assert resp.status == 401
        assert set_cookies(resp) == []
    assert (await client.get("/")).status == 401


async def test_valid_query_token_signs_in_and_leaves_the_url(
    client: TestClient[Any, Any],
) -> None:
    """A valid `?token=` becomes an HttpOnly, SameSite=Strict cookie, then a 303 drops it."""
    resp = await client.get(
        "/targets/api", params=[("b", "1"), ("token", TOKEN)], allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/targets/api?b=1"
    [cookie] = set_cookies(resp)
    attributes = [a.strip() for a in cookie.split(";")]
    assert attributes[0] == f"vigil_token={TOKEN}"
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    assert (await client.get("/targets/api")).status == 200


async def test_cookie_is_secure_over_tls(
    serve: Serve, tls_server_context: ssl.SSLContext, tls_ca: trustme.CA
) -> None:
    """Signed in over TLS, the cookie is Secure, so it never travels in clear."""
    url = await serve(make_app(aggregator([TOKEN]).http_deps()), tls_server_context)
    trust = ssl.create_default_context()
    tls_ca.configure_trust(trust)
    async with aiohttp.ClientSession() as session:
        resp = await session.get(f"{url}/?token={TOKEN}", ssl=trust, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == "/"
        [cookie] = set_cookies(resp)
        attributes = [a.strip() for a in cookie.split(";")]
        assert attributes[0] == f"vigil_token={TOKEN}"
        assert "Secure" in attributes


# Slow clients, against the real listener (`runtime.http.serve`) on 127.0.0.1.


@pytest.fixture
def enough_files() -> Iterator[None]:
    """Room for ~700 client sockets and the server's own in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Listener:
    """The aggregator's app on `serve()`, with the connections it sheds counted."""

    def __init__(self, agg: Aggregator, runner: web.AppRunner, port: int) -> None:
        self.agg = agg
        self.runner = runner
        self.port = port

    def shed(self, reason: str) -> float:
        value = self.agg.registry.get_sample_value(
            "vigil_http_connections_shed_total", {"reason": reason}
        )
        return value or 0.0

    def held(self) -> int:
        """Connections the server is holding right now."""
        assert self.runner.server is not None
        return len(self.runner.server.connections)

    async def healthz(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"http://127.0.0.1:{self.port}/healthz") as resp,
            ):
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@contextlib.asynccontextmanager
async def listening(limits: ConnectionLimits) -> AsyncIterator[Listener]:
    agg = aggregator([])
    runner, _host, port = await serve(
        make_app(agg.http_deps()), "127.0.0.1:0", limits, agg.metrics.connection_shed
    )
    try:
        yield Listener(agg, runner, port)
    finally:
        await runner.cleanup()


class SlowClients:
    """Client sockets that stall mid-head; each notes when the server closes it."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.closed = 0
        self._watchers: list[asyncio.Task[None]] = []

    async def open(self, port: int, count: int, head: bytes, batch: int = 50) -> None:
        # In batches, so the listen backlog never overflows into SYN retries.
        for start in range(0, count, batch):
            opened = await asyncio.gather(
                *(self._one(port, head) for _ in range(min(batch, count - start)))
            )
            self.writers.extend(opened)

    async def _one(self, port: int, head: bytes) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        self._watchers.append(asyncio.create_task(self._watch(reader)))
        return writer

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        self.closed += 1

    async def close(self) -> None:
        for task in self._watchers:
            task.cancel()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.gather(*self._watchers, return_exceptions=True)


@contextlib.asynccontextmanager
async def slow_clients() -> AsyncIterator[SlowClients]:
    clients = SlowClients()
    try:
        yield clients
    finally:
        await clients.close()


@contextlib.asynccontextmanager
async def connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw client connection, aborted on the way out whatever happened."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def request_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive GET /healthz on an open connection; the status line it got."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 30)
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def test_slow_request_heads_are_closed_after_header_timeout(enough_files: None) -> None:
    """Silent, half-sent and dripping request heads are closed once header_timeout passes."""
    limits = ConnectionLimits(header_timeout=1.0, keepalive_timeout=60.0, max_connections=512)
    async with listening(limits) as server, slow_clients() as slow:
        # A well-behaved keep-alive client, connected before the slow ones.
        keeper = await asyncio.open_connection("127.0.0.1", server.port)
        slow.writers.append(keeper[1])
        assert (await request_on(*keeper)).startswith(b"HTTP/1.1 200")
        await slow.open(server.port, 40, b"")
        await slow.open(server.port, 40, PARTIAL_HEAD)

        async def drip() -> None:
            # One byte of a never-ending header every 100 ms: always busy, never done.
            with contextlib.suppress(ConnectionError):
                while True:
                    dripper.write(b"a")
                    await dripper.drain()
                    await asyncio.sleep(0.1)

        drip_reader, dripper = await asyncio.open_connection("127.0.0.1", server.port)
        slow.writers.append(dripper)
        dripper.write(PARTIAL_HEAD)
        dripping = asyncio.create_task(drip())
        try:
            await wait_until(lambda: slow.closed == 80, 60, "slow heads closed")
            assert await asyncio.wait_for(drip_reader.read(), 60) == b""
        finally:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
        assert server.shed("header_timeout") == 81
        # More than header_timeout later, the keep-alive connection that sent a whole head
        # is still open and still answers.
        assert (await request_on(*keeper)).startswith(b"HTTP/1.1 200")


async def test_idle_keepalive_connection_is_closed(enough_files: None) -> None:
    """A keep-alive connection left idle after its request is closed after keepalive_timeout."""
    limits = ConnectionLimits(header_timeout=30.0, keepalive_timeout=1.0)
    async with listening(limits) as server, connection(server.port) as (reader, writer):
        assert (await request_on(reader, writer)).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.read(), 60) == b""


@pytest.mark.parametrize("header_timeout", [1.0, 120.0])
async def test_healthz_answers_while_slow_connections_flood_the_cap(
    enough_files: None, header_timeout: float
) -> None:
    """Past the cap each newcomer pushes out the oldest stalled connection, so /healthz answers."""
    limits = ConnectionLimits(header_timeout=header_timeout, max_connections=100)
    async with listening(limits) as server, slow_clients() as slow:
        await slow.open(server.port, 600, PARTIAL_HEAD)
        # Long before a 120 s header_timeout, all but the cap's worth are gone.
        await wait_until(lambda: slow.closed >= 500, 60, "stalled connections beyond the cap")
        await wait_until(lambda: server.held() <= 100, 30, "the server to hold at most the cap")
        await wait_until_async(server.healthz, 60, "/healthz answering")
        shed = sum(server.shed(r) for r in ("header_timeout", "evicted", "evicted_idle"))
        assert shed >= 500
        if header_timeout < 60:
            await wait_until(lambda: slow.closed == 600, 60, "every stalled connection closed")


async def test_blank_lines_are_not_a_request_head(enough_files: None) -> None:
    """Blank lines alone (skipped by the parser before a request line) are still timed out."""
    limits = ConnectionLimits(header_timeout=1.0, keepalive_timeout=60.0, max_connections=512)
    async with listening(limits) as server, slow_clients() as slow:
        await slow.open(server.port, 4, b"\r\n\r\n")
        await wait_until(lambda: slow.closed == 4, 30, "blank-line connections closed")
        assert server.shed("header_timeout") == 4


async def test_keepalive_clients_holding_every_slot_cannot_lock_out_healthz(
    enough_files: None,
) -> None:
    """At the cap with every connection past its head, the quietest one makes room."""
    limits = ConnectionLimits(header_timeout=30.0, keepalive_timeout=60.0, max_connections=4)
    async with listening(limits) as server, contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(connection(server.port)) for _ in range(4)]
        for reader, writer in held:
            assert (await request_on(reader, writer)).startswith(b"HTTP/1.1 200")
        # The last one keeps talking; the first has been quiet the longest.
        assert (await request_on(*held[-1])).startswith(b"HTTP/1.1 200")
        assert await server.healthz()
        assert server.shed("evicted_idle") >= 1
        assert await asyncio.wait_for(held[0][0].read(), 30) == b""
        assert (await request_on(*held[-1])).startswith(b"HTTP/1.1 200")
