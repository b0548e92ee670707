"""The lean client's own edges (probe/lean.py), staged by raw TCP servers on 127.0.0.1.

A health check on a fresh connection (the default) goes through the lean client, so every
test of a check in this folder exercises it; these are the cases its own code decides:
interim answers, bodies framed by the connection's end, answers cut short, heads without
end, several addresses, and a connection closed when the check is cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from probe.check import Checker, PhaseTimer
from probe.config import TargetConfig
from probe.lean import MAX_HEAD, LeanClient, request_bytes
from runtime.tls import client_context
from tests.component.conftest import StaticResolver, injected_checker
from wire.result import ErrorKind

OK_BODY = b'{"status":"ok"}'


class Staged:
    """A raw server writing scripted pieces after the request; `closed` when the peer left."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self, pieces: Sequence[bytes | float], *, close: bool = True) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                for piece in pieces:
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                    else:
                        writer.write(piece)
                        await writer.drain()
                if not close:
                    await reader.read()  # until the client goes
                    self.closed.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def staged() -> AsyncIterator[Callable[..., Awaitable[tuple[str, Staged]]]]:
    servers: list[Staged] = []

    async def start(pieces: Sequence[bytes | float], *, close: bool = True) -> tuple[str, Staged]:
        staged = Staged()
        port = await staged.start(pieces, close=close)
        servers.append(staged)
        return f"http://127.0.0.1:{port}", staged

    yield start
    for s in servers:
        if s.server is not None:
            s.server.close()
            await s.server.wait_closed()


def target(url: str, **kw: Any) -> TargetConfig:
    fields: dict[str, Any] = {
        "name": "api",
        "url": url,
        "health_path": "/health",
        "version_path": None,
        "interval": 2,
        "timeout": 1,
    }
    fields.update(kw)
    return TargetConfig.model_validate(fields)


def ok_answer(extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: 15\r\n\r\n"
        + OK_BODY
    )


async def test_interim_answers_before_the_final_one_are_skipped(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """100 Continue and 103 Early Hints are not the answer: the 200 after them is."""
    url, _ = await staged(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            ok_answer(),
        ]
    )
    result = await checker.run(target(url), time.time())
    assert result.ok, result.error
    assert result.status_code == 200


async def test_a_body_framed_by_the_end_of_the_connection_is_read_whole(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """HTTP/1.0 style: no Content-Length, no chunks; the body ends when the server closes."""
    url, _ = await staged([b"HTTP/1.0 200 OK\r\n\r\n", b'{"status"', 0.05, b':"ok"}'])
    result = await checker.run(target(url), time.time())
    assert result.ok, result.error
    assert result.phases.transfer is not None
    assert result.phases.transfer >= 10  # the body's end waited for the close, 50 ms later


@pytest.mark.parametrize(
    ("pieces", "says"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n", b'{"status"'], "whole body"),
        (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b'9\r\n{"status"\r\n'],
            "whole body",
        ),
        ([b"HTTP/1.1 200 OK\r\nContent-"], "before answering"),
        ([], "before answering"),
    ],
    ids=["content-length", "chunked", "mid-head", "no-answer"],
)
async def test_an_answer_cut_short_is_connect(
    checker: Checker,
    staged: Callable[..., Awaitable[tuple[str, Staged]]],
    pieces: list[bytes],
    says: str,
) -> None:
    """A connection that ends before the answer does is the network's failure, not a parse."""
    url, _ = await staged(pieces)
    result = await checker.run(target(url), time.time())
    assert result.error_kind is ErrorKind.CONNECT
    assert result.error is not None
    assert says in result.error


async def test_a_head_without_end_is_refused_at_its_bound(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """A header line that never ends: `protocol` once the head passes MAX_HEAD, memory flat."""
    endless = [b"HTTP/1.1 200 OK\r\nX-Pad: "] + [b"a" * 16384] * (MAX_HEAD * 8 // 16384)
    url, _ = await staged(endless)
    tracemalloc.start()
    try:
        result = await checker.run(target(url), time.time())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error_kind is ErrorKind.PROTOCOL
    assert result.error is not None
    assert f"larger than {MAX_HEAD} bytes" in result.error
    assert peak < 4 * MAX_HEAD + 1024 * 1024  # not the 512 KiB the server sent, and more


async def test_endless_trailers_are_refused_at_their_bound(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """After the last chunk, a trailer that never ends: `protocol` at once, not a timeout.

    The review's finding: with only the head bounded, httptools grew the trailer by
    copying it whole on every read, a core busy for the check's whole timeout.
    """
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n" + OK_BODY
    endless = [chunked + b"\r\n0\r\nX-T: "] + [b"a" * 16384] * (MAX_HEAD * 8 // 16384)
    url, _ = await staged(endless, close=False)
    result = await checker.run(target(url, interval=10, timeout=5), time.time())
    assert result.error_kind is ErrorKind.PROTOCOL
    assert result.error is not None
    assert "trailers larger than the probe reads" in result.error


@pytest.mark.parametrize("coding", ["gzip", "gzip, chunked", "chunked, gzip"])
async def test_a_transfer_coding_other_than_chunked_is_refused(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]], coding: str
) -> None:
    """Never decoded, and `chunked, gzip` would run the body to the connection's end."""
    head = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n".encode()
    url, _ = await staged([head, b"f\r\n" + OK_BODY + b"\r\n0\r\n\r\n"])
    result = await checker.run(target(url), time.time())
    assert result.error_kind is ErrorKind.PROTOCOL
    assert result.error is not None
    assert "unsupported Transfer-Encoding" in result.error


async def test_a_body_announced_too_large_is_refused_before_any_of_it_is_read(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """Content-Length over max_body: `body_too_large` from the head alone, not a timeout."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"
    url, _ = await staged([head], close=False)  # then nothing: the body never comes
    result = await checker.run(target(url), time.time())
    assert result.error_kind is ErrorKind.BODY_TOO_LARGE
    assert result.status_code == 200


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_a_bodiless_answer_is_not_judged_by_the_length_it_announces(
    staged: Callable[..., Awaitable[tuple[str, Staged]]], status: bytes
) -> None:
    """204 and 304 carry no body; their Content-Length is the resource's, not a bomb."""
    url, _ = await staged([b"HTTP/1.1 " + status + b"\r\nContent-Length: 999999\r\n\r\n"])
    async with LeanClient() as client:
        answer = await client.get(url, {}, True, PhaseTimer(), 65536)
    assert answer.status == int(status[:3])
    assert answer.body_error is None
    assert answer.body == b""


async def test_two_lengths_are_a_protocol_error(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """Conflicting framing (request smuggling's tool) is refused, never guessed."""
    url, _ = await staged([ok_answer(b"Content-Length: 14\r\n")])
    result = await checker.run(target(url), time.time())
    assert result.error_kind is ErrorKind.PROTOCOL


async def test_a_timed_out_check_closes_its_connection(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """The check's timeout cancels the read, and the connection is closed, not leaked."""
    url, server = await staged([b"HTTP/1.1 200 OK\r\n"], close=False)
    result = await checker.run(target(url, timeout=0.3), time.time())
    assert result.error_kind is ErrorKind.TIMEOUT
    async with asyncio.timeout(10):
        await server.closed.wait()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_checks_cancelled_at_every_stage_leak_no_descriptor(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]], closed_port: int
) -> None:
    """Timed out in the TLS handshake or mid-answer, refused: every socket is closed.

    A probe checking a hung target every few seconds must not run out of descriptors.
    """
    # Each server closes its side only when the client has gone: a client socket left
    # open keeps its server's open too, and both count below.
    silent, _ = await staged([], close=False)  # accepts, never says a word
    midway, _ = await staged([b"HTTP/1.1 200 OK\r\n"], close=False)
    targets = [
        target(silent.replace("http://", "https://"), timeout=0.2),  # stuck in the handshake
        target(silent, timeout=0.2),  # stuck before the answer
        target(midway, timeout=0.2),  # stuck mid-head
        target(f"http://127.0.0.1:{closed_port}", timeout=0.2),  # refused
    ]
    await asyncio.gather(*(checker.run(t, time.time()) for t in targets))  # warm up
    before = open_descriptors()
    for _ in range(10):
        results = await asyncio.gather(*(checker.run(t, time.time()) for t in targets * 5))
        kinds = {r.error_kind for r in results}
        assert kinds == {ErrorKind.TIMEOUT, ErrorKind.CONNECT}
    async with asyncio.timeout(10):
        while open_descriptors() > before:  # noqa: ASYNC110 - polling the kernel's table
            await asyncio.sleep(0.05)


async def test_the_next_address_is_tried_when_one_refuses(
    staged: Callable[..., Awaitable[tuple[str, Staged]]], closed_port: int
) -> None:
    """A name with two addresses, the first refusing: the check reaches the second."""
    url, _ = await staged([ok_answer()])
    live = int(url.rsplit(":", 1)[1])

    class TwoAddresses(StaticResolver):
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
            first = (await super().resolve(host, port, family))[0]
            return [{**first, "port": closed_port}, {**first, "port": live}]

    async with injected_checker(TwoAddresses({"api.test": live})) as checker:
        result = await checker.run(target("http://api.test"), time.time())
    assert result.ok, result.error
    assert result.phases.dns is not None


async def test_a_name_the_resolver_finds_no_address_for_is_dns() -> None:
    """Not an IndexError filed as the probe's own bug (`internal`): the name is the problem."""

    class Nothing(StaticResolver):
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
            return []

    async with injected_checker(Nothing()) as checker:
        result = await checker.run(target("http://api.test"), time.time())
    assert result.error_kind is ErrorKind.DNS
    assert result.error == "cannot connect to api.test:80: no address for the name"


async def test_any_resolver_error_is_dns() -> None:
    """Aiohttp's AsyncResolver (with aiodns) raises a plain OSError for an unknown name."""

    class AsyncStyle(StaticResolver):
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
            raise OSError(None, "Domain name not found")

    async with injected_checker(AsyncStyle()) as checker:
        result = await checker.run(target("http://api.test"), time.time())
    assert result.error_kind is ErrorKind.DNS
    assert result.error == "cannot connect to api.test:80: Domain name not found"


@pytest.mark.parametrize("host", ["a..example", "b" * 64 + ".example", "ü..example"])
async def test_a_host_name_no_resolver_can_ask_for_is_dns_not_internal(
    checker: Checker, host: str
) -> None:
    """Accepted by the config, refused by the idna codec: the name's fault, every check."""
    result = await checker.run(target(f"http://{host}/"), time.time())
    assert result.error_kind is ErrorKind.DNS
    assert not result.inconclusive
    assert result.error is not None
    assert result.error.endswith("not a valid host name")


async def test_refused_says_so_in_the_system_s_words(checker: Checker, closed_port: int) -> None:
    """Not asyncio's 'Connect call failed (...)': the same text on every loop and scheme."""
    for scheme in ("http", "https"):
        result = await checker.run(target(f"{scheme}://127.0.0.1:{closed_port}"), time.time())
        assert result.error_kind is ErrorKind.CONNECT
        assert result.error == f"cannot connect to 127.0.0.1:{closed_port}: Connection refused"


async def test_the_request_says_who_asks_and_closes(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    url, server = await staged([ok_answer()])
    await checker.run(target(url, headers={"X-Team": "sre"}), time.time())
    head = server.requests[0].decode()
    assert head.startswith("GET /health HTTP/1.1\r\n")
    for line in ("Connection: close", "X-Vigil-Region: us-east", "X-Team: sre"):
        assert f"\r\n{line}\r\n" in head
    assert f"\r\nHost: {url.removeprefix('http://')}\r\n" in head


async def test_the_target_s_headers_replace_the_defaults(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """A virtual host by IP: one Host line, the target's (two make servers answer 400).

    The review's finding: the target's headers were added after the client's own.
    """
    url, server = await staged([ok_answer()])
    headers = {"host": "shop.example", "Accept-Encoding": "identity", "Connection": "keep-alive"}
    await checker.run(target(url, headers=headers), time.time())
    lines = server.requests[0].decode().lower().split("\r\n")
    assert [line for line in lines if line.startswith("host:")] == ["host: shop.example"]
    assert [line for line in lines if line.startswith("accept-encoding:")] == [
        "accept-encoding: identity"
    ]
    assert [line for line in lines if line.startswith("connection:")] == ["connection: close"]


async def test_credentials_in_the_url_are_sent_as_basic_auth(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """As aiohttp did: `http://user:pass@host` is not silently a 401 on every check."""
    url, server = await staged([ok_answer()])
    with_user = url.replace("http://", "http://probe:s%40cret@")
    await checker.run(target(with_user), time.time())
    head = server.requests[0].decode()
    expected = base64.b64encode(b"probe:s@cret").decode()
    assert f"\r\nAuthorization: Basic {expected}\r\n" in head
    assert "s%40cret" not in head.split("\r\n")[0]
    assert f"\r\nHost: {url.removeprefix('http://')}\r\n" in head


async def test_the_phases_are_timed_in_order(
    staged: Callable[..., Awaitable[tuple[str, Staged]]],
) -> None:
    url, _ = await staged([b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n", 0.05, OK_BODY])
    timer = PhaseTimer(start=time.perf_counter())
    async with LeanClient() as client:
        answer = await client.get(url + "/health", {}, True, timer, 65536)
    assert answer.status == 200
    assert answer.body == OK_BODY
    stamps = [timer.conn_start, timer.tcp_connected, timer.conn_end, timer.headers_sent]
    stamps += [timer.response, timer.done]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    assert timer.done - timer.response >= 0.02  # type: ignore[operator]


@pytest.mark.parametrize(
    ("url", "host_line", "request_line"),
    [
        ("http://127.0.0.1:8080/a b?x=é", "Host: 127.0.0.1:8080", "GET /a%20b?x=%C3%A9 HTTP/1.1"),
        ("https://[::1]/p", "Host: [::1]", "GET /p HTTP/1.1"),
        ("http://bücher.example/", "Host: xn--bcher-kva.example", "GET / HTTP/1.1"),
        ("http://h.test:80", "Host: h.test", "GET / HTTP/1.1"),
    ],
)
def test_request_lines(url: str, host_line: str, request_line: str) -> None:
    request, _host, _port, _tls = request_bytes(url, {})
    lines = request.decode().split("\r\n")
    assert lines[0] == request_line
    assert host_line in lines


@pytest.mark.parametrize(
    "headers", [{"X-A": "v\r\nInjected: 1"}, {"X-A\nB": "v"}, {"X-A": "v\0"}, {"X:A": "v"}]
)
def test_a_header_that_would_split_the_request_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="line break, NUL or colon"):
        request_bytes("http://h.test/", headers)


def test_tls_contexts_come_from_runtime_s_one_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean client's verifying and `tls_verify: false` contexts are runtime.tls's."""
    built: list[dict[str, Any]] = []
    real = client_context

    def spy(**kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr("probe.lean.client_context", spy)
    LeanClient()
    assert built == [{}, {"insecure": True}]


async def test_a_finished_check_leaves_no_reference_cycle(
    checker: Checker, staged: Callable[..., Awaitable[tuple[str, Staged]]]
) -> None:
    """A check's exchange, parser and connection are freed when it ends, not by the collector.

    At 1,000 checks a second, cycles left per check made the young collections slow enough
    to start checks late (docs/performance.md). With the collector off, whatever a cycle held
    would still be alive afterwards.
    """
    from probe.lean import _Exchange

    url, _ = await staged([ok_answer()])
    await checker.run(target(url), time.time())  # warm: caches, pools, imports
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            assert (await checker.run(target(url), time.time())).ok
        await asyncio.sleep(0.05)  # connections closed (connection_lost) meanwhile
        left = [o for o in gc.get_objects() if isinstance(o, _Exchange)]
    finally:
        gc.enable()
    assert left == []
