"""Silences on two real Alertmanagers (not clustered): each peer is asked itself."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator.config import AlertmanagerConfig
from aggregator.edges.silences import create_silences, expire_silence, list_silences
from demo.local import free_port
from tests.integration.conftest import Alertmanager

pytestmark = pytest.mark.integration

MATCHER = {"name": "target", "value": "checkout", "isRegex": False, "isEqual": True}


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Alertmanager]]:
    # Nothing fires here, so the receiver is never called: a closed port will do.
    nowhere = f"http://127.0.0.1:{free_port()}/hook"
    managers = [Alertmanager(tmp_path / f"am{i}", nowhere) for i in range(2)]
    try:
        for am in managers:
            am.start()
        yield managers
    finally:
        for am in managers:
            am.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def silence(
    session: aiohttp.ClientSession, config: AlertmanagerConfig, url: str, silence_id: str
) -> dict[str, Any]:
    found = [s for s in await list_silences(session, config, url) if s["id"] == silence_id]
    assert len(found) == 1, f"{silence_id} not on {url}"
    return found[0]


async def test_every_peer_holds_the_silence_until_it_is_expired(
    peers: list[Alertmanager], session: aiohttp.ClientSession
) -> None:
    """Each peer gets an active silence for the target with the comment; expiring ends it."""
    config = AlertmanagerConfig(urls=[am.url for am in peers])
    now = time.time()
    outcomes = await create_silences(
        session,
        config,
        matchers={"target": "checkout"},
        starts_at=now,
        ends_at=now + 1800,
        created_by="vigil-test",
        comment="maintenance: deploy 42",
    )
    assert [(o.url, o.error) for o in outcomes] == [(am.url, None) for am in peers]
    for outcome in outcomes:
        assert outcome.silence_id is not None
        held = await silence(session, config, outcome.url, outcome.silence_id)
        assert held["status"]["state"] == "active"
        assert held["matchers"] == [MATCHER]
        assert held["comment"] == "maintenance: deploy 42"
        assert held["createdBy"] == "vigil-test"
    for outcome in outcomes:
        assert outcome.silence_id is not None
        assert await expire_silence(session, config, outcome.url, outcome.silence_id) is None
        held = await silence(session, config, outcome.url, outcome.silence_id)
        assert held["status"]["state"] == "expired"


async def test_a_stopped_peer_fails_alone(
    peers: list[Alertmanager], session: aiohttp.ClientSession
) -> None:
    """With one peer stopped the other still gets its silence; the stopped one says why not."""
    up, down = peers
    down.stop()
    config = AlertmanagerConfig(urls=[down.url, up.url], timeout=2.0)
    now = time.time()
    stopped, running = await create_silences(
        session,
        config,
        matchers={"target": "checkout"},
        starts_at=now,
        ends_at=now + 1800,
        created_by="vigil-test",
        comment="maintenance while a peer is away",
        attempts=2,
    )
    assert stopped.url == down.url
    assert stopped.silence_id is None
    assert stopped.error
    assert "Connect" in stopped.error
    assert running.url == up.url
    assert running.error is None
    assert running.silence_id is not None
    held = await silence(session, config, up.url, running.silence_id)
    assert held["status"]["state"] == "active"
    assert held["matchers"] == [MATCHER]
