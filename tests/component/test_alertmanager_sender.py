"""The Alertmanager sender against scripted HTTP peers on 127.0.0.1 (edge cases only)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aggregator.config import AlertmanagerConfig
from aggregator.edges.alertmanager import ConsoleSink, Outcome, PeerSender, auth_headers
from runtime.clock import rfc3339
from tests.conftest import Serve
from tests.polling import wait_until


class FakePeer:
    """Answers POST /api/v2/alerts with scripted statuses, recording what it got.

    While `down` is set it answers 503 to everything; `attempts` holds every body it was sent,
    `received` only the bodies it accepted.
    """

    def __init__(self, statuses: list[int], *, down: bool = False) -> None:
        self.statuses = statuses
        self.down = down
        self.attempts: list[list[dict[str, Any]]] = []
        self.received: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts.append(body)
        if self.down:
            return web.Response(status=503, text="peer down")
        status = self.statuses.pop(0) if self.statuses else 200
        self.headers.append(dict(request.headers))
        if status == 200:
            self.received.append(body)
        return web.Response(status=status, text="bad alert" if status == 400 else "")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", self.handle)
        return app


def alert(name: str, state: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name},
        "annotations": {"state": state},
        "startsAt": "2026-01-01T00:00:00.000Z",
        "endsAt": "2026-01-01T00:04:00.000Z",
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def run_sender(sender: PeerSender) -> asyncio.Task[None]:
    return asyncio.create_task(sender.run())


async def test_a_retry_carries_the_update_that_arrived_while_the_peer_failed(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """An update queued while the peer answers 503 replaces the failed batch on the next try."""
    peer = FakePeer([], down=True)
    url = await serve(peer.app())
    posts: list[Outcome] = []
    sender = PeerSender(
        url,
        session,
        AlertmanagerConfig(urls=[url]),
        headers={},
        on_post=lambda _u, o, _s: posts.append(o),
    )
    task = await run_sender(sender)
    sender.enqueue([alert("A", "firing")])
    await wait_until(lambda: posts, what="the first, failed post")
    assert peer.attempts == [[alert("A", "firing")]]
    sender.enqueue([alert("A", "resolved")])  # arrives while the peer is failing
    peer.down = False
    await wait_until(lambda: peer.received and len(sender) == 0, limit=20, what="delivery")
    task.cancel()
    assert peer.received == [[alert("A", "resolved")]]
    assert posts[0] is Outcome.RETRY
    assert posts[-1] is Outcome.SUCCESS
    assert posts.count(Outcome.SUCCESS) == 1


async def test_posts_are_split_into_batches_of_batch_size(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Five queued alerts with batch_size 2 go out oldest first in posts of 2, 2 and 1."""
    peer = FakePeer([])
    url = await serve(peer.app())
    sender = PeerSender(url, session, AlertmanagerConfig(urls=[url], batch_size=2), headers={})
    sender.enqueue([alert(name, "firing") for name in "ABCDE"])
    task = await run_sender(sender)
    await wait_until(
        lambda: sum(len(batch) for batch in peer.received) == 5, what="every alert delivered"
    )
    task.cancel()
    assert [[a["labels"]["alertname"] for a in batch] for batch in peer.received] == [
        ["A", "B"],
        ["C", "D"],
        ["E"],
    ]


async def test_4xx_is_not_retried(serve: Serve, session: aiohttp.ClientSession) -> None:
    """A 400 is logged and counted once; the update is dropped, the next one still goes."""
    peer = FakePeer([400])
    url = await serve(peer.app())
    posts: list[Outcome] = []
    sender = PeerSender(
        url,
        session,
        AlertmanagerConfig(urls=[url]),
        headers={},
        on_post=lambda _u, o, _s: posts.append(o),
    )
    task = await run_sender(sender)
    sender.enqueue([alert("Bad", "firing")])
    await wait_until(lambda: posts, what="the rejected post")
    sender.enqueue([alert("Good", "firing")])
    await wait_until(lambda: peer.received, what="the next post")
    task.cancel()
    assert posts == [Outcome.REJECTED, Outcome.SUCCESS]
    assert peer.received == [[alert("Good", "firing")]]


async def test_a_dead_peer_does_not_delay_the_others(
    serve: Serve, session: aiohttp.ClientSession, closed_port: int
) -> None:
    """With one peer refusing connections, the live peer still gets every alert promptly."""
    live = FakePeer([])
    live_url = await serve(live.app())
    dead_url = f"http://127.0.0.1:{closed_port}"
    config = AlertmanagerConfig(urls=[live_url, dead_url])
    senders = [PeerSender(u, session, config, headers={}) for u in (live_url, dead_url)]
    tasks = [await run_sender(s) for s in senders]
    for s in senders:
        s.enqueue([alert("A", "firing")])
    await wait_until(lambda: live.received, limit=5, what="the live peer")
    assert len(senders[1]) == 1  # still queued for the dead one, not lost
    for t in tasks:
        t.cancel()


async def test_queue_is_bounded_and_coalesces(session: aiohttp.ClientSession) -> None:
    """Updates of one alert replace each other; beyond queue_size the oldest is dropped."""
    drops: list[str] = []
    config = AlertmanagerConfig(urls=["http://127.0.0.1:1"], queue_size=2)
    sender = PeerSender("http://127.0.0.1:1", session, config, headers={}, on_drop=drops.append)
    sender.enqueue([alert("A", "firing"), alert("A", "resolved"), alert("B", "firing")])
    assert len(sender) == 2
    sender.enqueue([alert("C", "firing")])
    assert len(sender) == 2
    assert drops == ["http://127.0.0.1:1"]


async def test_auth_headers_are_sent(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Bearer token and basic auth reach the peer as an Authorization header."""
    peer = FakePeer([])
    url = await serve(peer.app())
    config = AlertmanagerConfig.model_validate({"urls": [url], "bearer_token": "s3cret"})
    sender = PeerSender(url, session, config, headers=auth_headers(config))
    task = await run_sender(sender)
    sender.enqueue([alert("A", "firing")])
    await wait_until(lambda: peer.received)
    task.cancel()
    assert peer.headers[0]["Authorization"] == "Bearer s3cret"
    basic = AlertmanagerConfig.model_validate(
        {"urls": [url], "basic_auth": {"username": "vigil", "password": "pw"}}
    )
    assert auth_headers(basic) == {"Authorization": "Basic dmlnaWw6cHc="}


@pytest.mark.parametrize(
    ("tls_insecure", "trust_ca", "delivered"),
    [
        pytest.param(True, False, True, id="tls_insecure"),  # a self-signed lab Alertmanager
        pytest.param(False, True, True, id="ca_file"),  # the CA that signed it, trusted
        pytest.param(False, False, False, id="system-cas"),  # the self-signed cert is refused
    ],
)
async def test_tls_settings_decide_whether_a_self_signed_peer_is_trusted(
    serve: Serve,
    session: aiohttp.ClientSession,
    tls_server_context: ssl.SSLContext,
    ca_file: Path,
    tls_insecure: bool,
    trust_ca: bool,
    delivered: bool,
) -> None:
    """tls_insecure or the signing CA reach an HTTPS peer; default verification refuses it."""
    peer = FakePeer([])
    url = await serve(peer.app(), ssl_context=tls_server_context)
    assert url.startswith("https://")
    config = AlertmanagerConfig(
        urls=[url], tls_insecure=tls_insecure, ca_file=ca_file if trust_ca else None
    )
    posts: list[Outcome] = []
    sender = PeerSender(url, session, config, headers={}, on_post=lambda _u, o, _s: posts.append(o))
    task = await run_sender(sender)
    sender.enqueue([alert("A", "firing")])
    await wait_until(lambda: posts, what="a post over TLS")
    task.cancel()
    if delivered:
        assert posts[0] is Outcome.SUCCESS
        assert peer.received == [[alert("A", "firing")]]
    else:
        assert posts[0] is Outcome.RETRY
        assert peer.attempts == []  # the handshake failed: no request reached the peer
        assert len(sender) == 1  # kept for the next try, not dropped


def test_console_sink_logs_each_alert_once_when_it_fires_and_once_when_resolved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without Alertmanager, a firing alert is logged once, its resends not, its resolution once."""
    now = 1_790_000_000.0
    sink = ConsoleSink(clock=lambda: now)

    def payload(ends: float) -> dict[str, Any]:
        return {
            "labels": {"alertname": "ServiceDown", "target": "api"},
            "annotations": {"summary": "api is down"},
            "startsAt": rfc3339(now - 60),
            "endsAt": rfc3339(ends),
        }

    with caplog.at_level(logging.WARNING, logger="vigil.aggregator.edges.alertmanager"):
        sink.enqueue([payload(now + 240)])
        sink.enqueue([payload(now + 300)])  # a resend of the firing alert
        sink.enqueue([payload(now)])  # resolved now
        sink.enqueue([payload(now)])  # a resend of the resolution
    logged = [
        (r.getMessage(), r.__dict__["status"], r.__dict__["alertname"], r.__dict__["summary"])
        for r in caplog.records
    ]
    assert logged == [
        ("alert", "firing", "ServiceDown", "api is down"),
        ("alert", "resolved", "ServiceDown", "api is down"),
    ]


class ValidatingPeer(FakePeer):
    """Like Alertmanager: a batch holding one invalid alert is refused whole with a 400."""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts.append(body)
        if any(a["labels"]["alertname"] == "Bad" for a in body):
            return web.Response(status=400, text="start time must be before end time")
        self.received.append(body)
        return web.Response(status=200)


async def test_one_invalid_alert_does_not_drop_the_rest_of_its_batch(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A 400 for a batch is retried alert by alert: only the invalid one is lost."""
    peer = ValidatingPeer([])
    url = await serve(peer.app())
    sender = PeerSender(url, session, AlertmanagerConfig(urls=[url]), headers={})
    sender.enqueue([alert("A", "firing"), alert("Bad", "firing"), alert("C", "firing")])
    task = await run_sender(sender)
    await wait_until(lambda: len(sender) == 0 and len(peer.attempts) >= 4, what="the split")
    task.cancel()
    delivered = sorted(a["labels"]["alertname"] for batch in peer.received for a in batch)
    assert delivered == ["A", "C"]
    assert len(peer.attempts) == 4  # the batch, then each alert once
