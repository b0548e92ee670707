"""The Alertmanager sender against scripted HTTP peers on 127.0.0.1 (edge cases only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aggregator.config import AlertmanagerConfig
from aggregator.edges.alertmanager import Outcome, PeerSender, auth_headers
from tests.conftest import Serve
from tests.polling import wait_until


class FakePeer:
    """Answers POST /api/v2/alerts with scripted statuses, recording what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.headers.append(dict(request.headers))
        if status == 200:
            self.received.append(await request.json())
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


async def test_5xx_is_retried_and_delivers_the_latest_state(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """After two 503s the peer gets the alert, in its newest state, and each try is counted."""
    peer = FakePeer([503, 503])
    url = await serve(peer.app())
    posts: list[Outcome] = []
    sender = PeerSender(
        url,
        session,
        AlertmanagerConfig(urls=[url]),
        headers={},
        on_post=lambda _u, o, _s: posts.append(o),
    )
    sender.enqueue([alert("A", "firing")])
    task = await run_sender(sender)
    sender.enqueue([alert("A", "resolved")])  # arrives while the first tries fail
    await wait_until(lambda: peer.received, limit=20, what="delivery after retries")
    task.cancel()
    assert peer.received[0] == [alert("A", "resolved")]
    assert posts[:2] == [Outcome.RETRY, Outcome.RETRY]
    assert posts[-1] is Outcome.SUCCESS
    assert len(sender) == 0


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
