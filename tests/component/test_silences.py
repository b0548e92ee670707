"""Alertmanager silences against scripted peers (aioresponses): retries, refusals, outages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from aggregator.config import AlertmanagerConfig
from aggregator.edges.silences import (
    SilenceError,
    SilenceOutcome,
    create_silences,
    expire_silence,
    list_silences,
    silence_body,
)

A, B = "http://am-a.test:9093", "http://am-b.test:9093"
# 2026-01-01T10:00:00.250Z and 30 minutes later.
STARTS = 1_767_261_600.25
ENDS = STARTS + 1800


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def config(*urls: str, **extra: Any) -> AlertmanagerConfig:
    return AlertmanagerConfig(urls=list(urls), **extra)


async def create(
    session: aiohttp.ClientSession, cfg: AlertmanagerConfig, attempts: int = 3
) -> list[SilenceOutcome]:
    return await create_silences(
        session,
        cfg,
        matchers={"target": "checkout"},
        starts_at=STARTS,
        ends_at=ENDS,
        created_by="vigil",
        comment="deploy 42",
        attempts=attempts,
    )


def posts(mocked: aioresponses, url: str) -> list[Any]:
    return list(mocked.requests.get(("POST", URL(f"{url}/api/v2/silences")), []))


async def test_body_shape_and_timestamps_are_exact(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """The POST carries equality matchers, RFC 3339 UTC times with milliseconds, and auth."""
    mocked.post(f"{A}/api/v2/silences", payload={"silenceID": "s-1"})
    outcomes = await create(session, config(A, bearer_token="am-secret"))
    assert outcomes == [SilenceOutcome(A, "s-1", None)]
    [call] = posts(mocked, A)
    assert json.loads(call.kwargs["data"]) == {
        "matchers": [{"name": "target", "value": "checkout", "isRegex": False, "isEqual": True}],
        "startsAt": "2026-01-01T10:00:00.250Z",
        "endsAt": "2026-01-01T10:30:00.250Z",
        "createdBy": "vigil",
        "comment": "deploy 42",
    }
    assert call.kwargs["headers"]["Authorization"] == "Bearer am-secret"
    assert call.kwargs["headers"]["Content-Type"] == "application/json"


async def test_a_5xx_is_retried_until_it_succeeds(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A 503 then a 500 then a 200 is a created silence after three tries."""
    endpoint = f"{A}/api/v2/silences"
    mocked.post(endpoint, status=503, body="unavailable")
    mocked.post(endpoint, status=500, body="oops")
    mocked.post(endpoint, payload={"silenceID": "s-2"})
    assert await create(session, config(A)) == [SilenceOutcome(A, "s-2", None)]
    assert len(posts(mocked, A)) == 3


async def test_a_400_is_not_retried_and_its_body_is_the_error(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A refusal is tried once; its status and body say why."""
    endpoint = f"{A}/api/v2/silences"
    mocked.post(endpoint, status=400, body="silence invalid: comment missing")
    mocked.post(endpoint, payload={"silenceID": "never"})
    [outcome] = await create(session, config(A))
    assert outcome.silence_id is None
    assert outcome.error == "HTTP 400: silence invalid: comment missing"
    assert len(posts(mocked, A)) == 1


async def test_one_peer_down_does_not_stop_the_other(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A peer refusing connections on every try fails alone; the other gets its silence."""
    for _ in range(2):
        mocked.post(f"{A}/api/v2/silences", exception=aiohttp.ClientConnectionError("refused"))
    mocked.post(f"{B}/api/v2/silences", payload={"silenceID": "s-b"})
    outcomes = await create(session, config(A, B), attempts=2)
    assert [o.url for o in outcomes] == [A, B]
    assert outcomes[0].silence_id is None
    assert outcomes[0].error == "ClientConnectionError: refused"
    assert outcomes[1] == SilenceOutcome(B, "s-b", None)
    assert len(posts(mocked, A)) == 2


async def test_timeouts_are_retried_and_reported_when_they_persist(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A peer that times out on every try reports the timeout after `attempts` tries."""
    for _ in range(3):
        mocked.post(f"{A}/api/v2/silences", exception=TimeoutError())
    [outcome] = await create(session, config(A))
    assert outcome == SilenceOutcome(A, None, "TimeoutError")
    assert len(posts(mocked, A)) == 3


async def test_last_5xx_is_the_error_when_retries_run_out(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """After the last try the error is that try's status and body."""
    mocked.post(f"{A}/api/v2/silences", status=502, body="bad gateway")
    [outcome] = await create(session, config(A), attempts=1)
    assert outcome == SilenceOutcome(A, None, "HTTP 502: bad gateway")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not json", "the answer is not JSON: not json"),
        ('{"id": "x"}', 'the answer has no silenceID: {"id": "x"}'),
        ('{"silenceID": ""}', 'the answer has no silenceID: {"silenceID": ""}'),
    ],
)
async def test_a_2xx_without_a_silence_id_is_an_error(
    mocked: aioresponses, session: aiohttp.ClientSession, body: str, why: str
) -> None:
    """A success that names no silence is reported, not trusted."""
    mocked.post(f"{A}/api/v2/silences", status=200, body=body)
    assert await create(session, config(A)) == [SilenceOutcome(A, None, why)]


async def test_no_peers_is_no_outcomes(session: aiohttp.ClientSession) -> None:
    """With no Alertmanager configured nothing is asked."""
    assert await create(session, config()) == []


@pytest.mark.parametrize(
    ("matchers", "ends_at"),
    [({}, ENDS), ({"target": "checkout"}, STARTS), ({"target": "checkout"}, STARTS - 1)],
)
def test_a_silence_that_matches_everything_or_never_runs_is_refused(
    matchers: dict[str, str], ends_at: float
) -> None:
    """No matchers, or a window that ends before it starts, is the caller's bug."""
    with pytest.raises(ValueError, match="silence"):
        silence_body(matchers, starts_at=STARTS, ends_at=ends_at, created_by="v", comment="c")


async def test_expire_deletes_the_silence(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """Expiring DELETEs /api/v2/silence/{id} with auth and reports nothing on success."""
    mocked.delete(f"{A}/api/v2/silence/s-1", status=200)
    assert await expire_silence(session, config(A, bearer_token="t"), A, "s-1") is None
    [call] = mocked.requests[("DELETE", URL(f"{A}/api/v2/silence/s-1"))]
    assert call.kwargs["headers"]["Authorization"] == "Bearer t"


async def test_expire_reports_a_refusal(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A 404 from the peer is returned as text, not raised, and not retried."""
    mocked.delete(f"{A}/api/v2/silence/gone", status=404, body="silence not found")
    assert await expire_silence(session, config(A), A, "gone") == "HTTP 404: silence not found"
    assert len(mocked.requests[("DELETE", URL(f"{A}/api/v2/silence/gone"))]) == 1


async def test_list_returns_the_peers_silences(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """GET /api/v2/silences is returned as Alertmanager sent it."""
    silences = [{"id": "s-1", "status": {"state": "active"}}]
    mocked.get(f"{A}/api/v2/silences", payload=silences)
    assert await list_silences(session, config(A), A) == silences


async def test_list_raises_when_the_peer_cannot_answer(
    mocked: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A peer that is down is an error for the one asking for its list."""
    mocked.get(f"{A}/api/v2/silences", exception=aiohttp.ClientConnectionError("refused"))
    with pytest.raises(SilenceError, match="refused"):
        await list_silences(session, config(A), A, attempts=1)
