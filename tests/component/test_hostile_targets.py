"""Hostile targets as real local servers: bombs, bodies at the cap, malformed answers, TLS.

Every server listens on 127.0.0.1; the checks run on the probe's own sessions and checker
(`checker_for`), and the scheduler test on the real `Scheduler`. Bounds are generous and
waits poll, so a loaded machine makes these tests slower, not red.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import ssl
import statistics
import time
import tracemalloc
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from probe.check import Checker
from probe.config import TargetConfig
from probe.schedule import Scheduler
from tests.conftest import Serve
from tests.polling import wait_until
from wire.result import ErrorKind, ProbeResult, VersionErrorKind

# Above aiohttp's own 32 MiB decompression limit, and a thousand times the probe's cap; its
# compressed form (about 40 KiB) is smaller than the cap, so only decompression can catch it.
BOMB_BYTES = 40 * 1024 * 1024
DEFAULT_CAP = 64 * 1024
WBITS = {"gzip": 31, "deflate": 15, "raw-deflate": -15}


def compress(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@functools.cache
def bomb(kind: str) -> bytes:
    """BOMB_BYTES of zeros, compressed; built once per test session."""
    packer = zlib.compressobj(9, zlib.DEFLATED, WBITS[kind])
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(BOMB_BYTES // len(zeros))]
    return b"".join(parts) + packer.flush()


def coding(kind: str) -> str:
    # Raw deflate is what some servers send for `deflate`; the probe must take both forms.
    return "deflate" if kind == "raw-deflate" else kind


def sized_ok(size: int) -> bytes:
    """A passing health body of exactly `size` bytes."""
    head = b'{"status":"ok","pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


class Hostile:
    """An aiohttp app whose answers each test sets, per path; records request headers."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        self.seen: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._answer)

    def body(self, path: str, body: bytes, encoding: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if encoding is not None:
            headers["Content-Encoding"] = encoding

        async def answer(_request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, headers=headers)

        self.answers[path] = answer

    def endless_bomb(self, path: str) -> None:
        """A gzip stream of zeros that never ends, sent chunked until the client goes."""
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1024 * 1024)
        first = packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)
        # Byte-aligned, non-final blocks whose back-references only ever see zeros: the same
        # megabyte can be sent again and again.
        again = packer.compress(zeros) + packer.flush(zlib.Z_SYNC_FLUSH)

        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                await response.write(first)
                for _ in range(4096):  # bounded: 4 GiB of zeros, never reached
                    await response.write(again)
                    await asyncio.sleep(0)  # the client shares this event loop
            return response

        self.answers[path] = answer

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        answer = self.answers.get(request.path)
        if answer is None:
            return web.json_response({"status": "ok", "current": "1"})
        return await answer(request)


@pytest.fixture
async def hostile(serve: Serve) -> tuple[Hostile, str]:
    app = Hostile()
    return app, await serve(app.app)


def target(url: str, **kw: Any) -> TargetConfig:
    fields: dict[str, Any] = {
        "name": "api",
        "url": url,
        "health_path": "/health",
        "version_path": "/version",
        "interval": 2,
        "timeout": 1,
    }
    fields.update(kw)
    return TargetConfig.model_validate(fields)


# Both HTTP paths a health check can take: the lean client on a fresh connection, and
# aiohttp's pooled session (`reuse_connections: true`).
BOTH_PATHS = pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "pooled"])


@BOTH_PATHS
@pytest.mark.parametrize("kind", ["gzip", "deflate", "raw-deflate", "endless-gzip"])
async def test_a_bomb_is_body_too_large_with_its_status(
    checker: Checker, hostile: tuple[Hostile, str], kind: str, reuse: bool
) -> None:
    """A decompression bomb fails as `body_too_large` with status 200, read only to the cap."""
    app, url = hostile
    if kind == "endless-gzip":
        app.endless_bomb("/health")
        app.endless_bomb("/version")
    else:
        app.body("/health", bomb(kind), coding(kind))
        app.body("/version", bomb(kind), coding(kind))
    result = await checker.run(target(url, reuse_connections=reuse), time.time())
    assert not result.ok
    assert result.error_kind is ErrorKind.BODY_TOO_LARGE
    assert result.status_code == 200
    assert (
        result.error
        == f"body larger than max_body ({DEFAULT_CAP} bytes decompressed); reading stopped"
    )
    assert result.version_error is VersionErrorKind.INVALID_BODY
    assert result.duration_ms < 900
    # Only encodings the probe decodes itself are offered.
    assert {seen["Accept-Encoding"] for seen in app.seen} == {"gzip, deflate"}


@BOTH_PATHS
@pytest.mark.parametrize("kind", ["identity", "gzip", "deflate", "raw-deflate"])
async def test_the_cap_is_on_the_decoded_body(
    checker: Checker, hostile: tuple[Hostile, str], kind: str, reuse: bool
) -> None:
    """A body of exactly max_body bytes passes; one byte more is `body_too_large`."""
    app, url = hostile
    cap = 4096
    capped = target(url, max_body=cap, version_path=None, reuse_connections=reuse)

    def answer(size: int) -> None:
        body = sized_ok(size)
        if kind == "identity":
            app.body("/health", body)
        else:
            app.body("/health", compress(body, WBITS[kind]), coding(kind))

    answer(cap)
    at_cap = await checker.run(capped, time.time())
    assert at_cap.ok, at_cap.error
    answer(cap + 1)
    over = await checker.run(capped, time.time())
    assert over.error_kind is ErrorKind.BODY_TOO_LARGE
    assert over.status_code == 200
    assert over.error is not None
    assert f"max_body ({cap} bytes" in over.error


@BOTH_PATHS
async def test_a_wrong_status_wins_over_a_bomb(
    checker: Checker, hostile: tuple[Hostile, str], reuse: bool
) -> None:
    """A 503 carrying a bomb is `http_status`, and a 401 carrying one is `auth`."""
    app, url = hostile

    async def answer(request: web.Request) -> web.StreamResponse:
        status = 503 if request.path == "/health" else 401
        return web.Response(status=status, body=bomb("gzip"), headers={"Content-Encoding": "gzip"})

    app.answers["/health"] = app.answers["/version"] = answer
    result = await checker.run(target(url, reuse_connections=reuse), time.time())
    assert result.error_kind is ErrorKind.HTTP_STATUS
    assert result.error == "HTTP 503, expected 200"
    assert result.status_code == 503
    assert result.version_error is VersionErrorKind.AUTH


@BOTH_PATHS
@pytest.mark.parametrize("kind", ["identity", "gzip"])
async def test_a_status_only_check_passes_a_large_page(
    checker: Checker, hostile: tuple[Hostile, str], kind: str, reuse: bool
) -> None:
    """`body: null` means any body passes: a 200 KB page (or a bomb) with 200 is ok."""
    app, url = hostile
    page = b"<html>" + b"x" * 200_000 + b"</html>"
    app.body("/health", page if kind == "identity" else bomb("gzip"), coding(kind))
    status_only = target(url, body=None, version_path=None, reuse_connections=reuse)
    result = await checker.run(status_only, time.time())
    assert result.ok, result.error
    assert result.status_code == 200
    assert result.duration_ms < 900


MALFORMED = {
    "status-line": b"HTTQ/9 200 OK\r\n\r\n",
    "header": b'HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 15\r\n\r\n{"status":"ok"}',
    "chunk-size": (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{"status":"ok"}\r\n0\r\n\r\n'
    ),
    "gzip-data": (
        b'HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'
    ),
    "truncated-gzip": (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\n"
        + compress(b'{"status":"ok"}', 31)[:12]
    ),
    "unsupported-encoding": (
        b'HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'
    ),
}
PARSE_TEXT = {
    "status-line": "probe could not parse the response: ",
    "header": "probe could not parse the response: Invalid header token",
    "chunk-size": "probe could not parse the body: Invalid character in chunk size",
    "gzip-data": "probe could not decode the body: gzip data does not decode",
    "truncated-gzip": "probe could not decode the body: gzip data is truncated",
    "unsupported-encoding": "probe could not decode the body: unsupported Content-Encoding 'br'",
}


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """A raw TCP server answering every request with fixed bytes, in one write, then closing."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@BOTH_PATHS
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_answer_is_a_protocol_error(
    checker: Checker,
    raw_server: Callable[[bytes], Awaitable[str]],
    case: str,
    reuse: bool,
) -> None:
    """An answer the probe cannot parse is `protocol`, said as the probe's, never as a 400."""
    url = await raw_server(MALFORMED[case])
    result = await checker.run(target(url, body=None, reuse_connections=reuse), time.time())
    assert result.error_kind is ErrorKind.PROTOCOL
    assert result.error is not None
    assert result.error.startswith(PARSE_TEXT[case]), result.error
    assert "400" not in result.error
    assert result.version_error is VersionErrorKind.INVALID_BODY


async def test_bombs_keep_memory_flat(checker: Checker, hostile: tuple[Hostile, str]) -> None:
    """Checking bomb targets at once allocates a few MiB at peak, not the bombs' 40 MiB each."""
    app, url = hostile
    for kind in ("gzip", "deflate"):
        app.body(f"/{kind}", bomb(kind), kind)
    targets = [
        target(url, name=f"bomb{i}", health_path=f"/{kind}", version_path=f"/{kind}")
        for i, kind in enumerate(["gzip", "deflate"] * 2)
    ]
    await checker.run(target(url, version_path=None), time.time())  # warm up the session
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        results = await asyncio.gather(*(checker.run(t, time.time()) for t in targets))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 16 * 1024 * 1024, f"peak {(peak - before) / 2**20:.1f} MiB"
    assert [r.error_kind for r in results] == [ErrorKind.BODY_TOO_LARGE] * len(targets)


async def test_bombs_do_not_starve_a_healthy_target(
    checker: Checker, hostile: tuple[Hostile, str]
) -> None:
    """Twelve bomb targets at 1 s leave a healthy target beside them its checks and latency."""
    app, url = hostile
    app.body("/bomb", bomb("gzip"), "gzip")
    bombs = [
        target(
            url, name=f"bomb{i}", health_path="/bomb", version_path="/bomb", interval=1, timeout=0.8
        )
        for i in range(12)
    ]
    control = target(url, name="control", version_path=None, interval=0.25, timeout=0.2)
    results: defaultdict[str, list[ProbeResult]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []

    async def check(t: TargetConfig, scheduled_at: float) -> bool:
        result = await checker.run(t, scheduled_at)
        results[t.name].append(result)
        return not result.ok

    scheduler = Scheduler(
        [*bombs, control],
        check,
        max_in_flight=1000,
        on_skip=lambda t, reason: skipped.append((t, reason)),
    )
    scheduler.start()
    try:
        # Four slots of every bomb target, each one run or reported skipped.
        await wait_until(
            lambda: all(
                len(results[b.name]) + sum(1 for t, _ in skipped if t == b.name) >= 4 for b in bombs
            ),
            limit=30,
            what="four slots of every bomb target",
        )
    finally:
        await scheduler.stop(grace=1)
    checks = results["control"]
    assert [r.error for r in checks if not r.ok] == []
    assert statistics.median(r.duration_ms for r in checks) < 50
    assert [s for s in skipped if s[0] == "control"] == []
    assert len(checks) >= 10
    bomb_kinds = {r.error_kind for b in bombs for r in results[b.name]}
    assert bomb_kinds == {ErrorKind.BODY_TOO_LARGE}


def self_signed(tmp_path: Path, not_after: datetime.datetime) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 expiring at `not_after`, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vigil-test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def healthy_tls_server(serve: Serve, tmp_path: Path, not_after: datetime.datetime) -> str:
    """A healthy /health over TLS with a self-signed certificate valid until `not_after`."""
    cert_path, key_path = self_signed(tmp_path, not_after)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    app = web.Application()

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", ok)
    return await serve(app, context)


@pytest.mark.parametrize(
    "not_after",
    [
        datetime.datetime(2031, 5, 17, 12, 34, 56, tzinfo=datetime.UTC),  # UTCTime
        datetime.datetime(2061, 3, 4, 5, 6, 7, tzinfo=datetime.UTC),  # GeneralizedTime
    ],
    ids=["utctime", "generalizedtime"],
)
@BOTH_PATHS
async def test_expiry_is_measured_without_verification(
    checker: Checker, serve: Serve, tmp_path: Path, not_after: datetime.datetime, reuse: bool
) -> None:
    """With tls_verify false the self-signed certificate's notAfter is reported, to the second."""
    url = await healthy_tls_server(serve, tmp_path, not_after)
    unverified = target(url, tls_verify=False, version_path=None, reuse_connections=reuse)
    result = await checker.run(unverified, time.time())
    assert result.ok, result.error
    assert result.tls_not_after == not_after.timestamp()
    assert json.loads(result.to_json())["tls_not_after"] == not_after.timestamp()


async def test_expiry_is_measured_on_a_reused_pooled_connection(
    checker: Checker, serve: Serve, tmp_path: Path
) -> None:
    """A pooled check riding a kept-alive TLS connection still reports the certificate's expiry."""
    not_after = datetime.datetime(2031, 5, 17, 12, 34, 56, tzinfo=datetime.UTC)
    url = await healthy_tls_server(serve, tmp_path, not_after)
    pooled = target(url, tls_verify=False, version_path=None, reuse_connections=True)
    first = await checker.run(pooled, time.time())
    second = await checker.run(pooled, time.time())
    assert first.ok, first.error
    assert second.ok, second.error
    # The second check rode the first one's connection: no connect phase of its own.
    assert first.phases.connect is not None
    assert second.phases.connect is None
    assert [first.tls_not_after, second.tls_not_after] == [not_after.timestamp()] * 2
