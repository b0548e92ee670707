"""Alertmanager v2 silences on every peer: how a maintenance window keeps its target quiet.

Each peer is asked itself, as alerts are sent (`alertmanager.py`): peers that are not
clustered never learn of each other's silences, and a clustered one may be cut off from the
rest when the window opens. The peers are asked at once; one that is down costs the others
nothing, and its failure is reported in its `SilenceOutcome`, never raised. Like alert
delivery, 5xx, timeouts and connection errors are retried a few times; a refusal is not,
since the same request would be refused again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from aggregator.config import AlertmanagerConfig
from aggregator.edges.alertmanager import (
    Outcome,
    RetryableError,
    auth_headers,
    classify_status,
    is_retryable,
)
from runtime.clock import rfc3339
from runtime.retry import backoff

log = logging.getLogger("vigil.aggregator.edges.silences")

# Short: an operator is waiting for the answer, unlike the alert queue which can wait.
_BACKOFF_FIRST, _BACKOFF_CAP, _JITTER = 0.2, 2.0, 0.1
# How much of a refusal's body goes into the error text.
_EXCERPT = 200


@dataclass(frozen=True)
class SilenceOutcome:
    """What one Alertmanager peer made of a silence request."""

    url: str
    # Alertmanager's silenceID when the silence was created.
    silence_id: str | None
    # Why not, in short: the status and a body excerpt, or the exception.
    error: str | None


class SilenceError(Exception):
    """Alertmanager refused a silence request, or answered it with something unusable."""


def silence_body(
    matchers: Mapping[str, str],
    *,
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    regex: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON of `POST /api/v2/silences`: equality and `regex` matchers, RFC 3339 UTC.

    Alertmanager anchors a regex matcher: `A|B` matches exactly A or B.

    Raises:
        ValueError: no matchers (which would silence everything) or an empty window.
    """
    if not matchers:
        raise ValueError("a silence needs at least one matcher")
    if ends_at <= starts_at:
        raise ValueError("a silence must end after it starts")
    return {
        "matchers": [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in matchers.items()
        ]
        + [
            {"name": name, "value": value, "isRegex": True, "isEqual": True}
            for name, value in (regex or {}).items()
        ],
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
        "createdBy": created_by,
        "comment": comment,
    }


async def create_silences(
    session: aiohttp.ClientSession,
    config: AlertmanagerConfig,
    *,
    matchers: Mapping[str, str],
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    attempts: int = 3,
    regex: Mapping[str, str] | None = None,
) -> list[SilenceOutcome]:
    """Create the same silence on every peer of `config.urls`, concurrently.

    Returns:
        One outcome per peer, in the order of `config.urls`.

    Raises:
        ValueError: as `silence_body`; a peer's failure is never raised.
    """
    body = json.dumps(
        silence_body(
            matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            regex=regex,
        )
    )

    async def one(url: str) -> SilenceOutcome:
        try:
            text = await _request(
                session, config, "POST", f"{url}/api/v2/silences", body=body, attempts=attempts
            )
            silence_id = _silence_id(text)
        except (RetryableError, SilenceError) as exc:
            log.warning("silence_failed", extra={"alertmanager": url, "error": str(exc)})
            return SilenceOutcome(url, None, str(exc))
        log.info("silence_created", extra={"alertmanager": url, "silence_id": silence_id})
        return SilenceOutcome(url, silence_id, None)

    return list(await asyncio.gather(*(one(url) for url in config.urls)))


async def expire_silence(
    session: aiohttp.ClientSession,
    config: AlertmanagerConfig,
    url: str,
    silence_id: str,
    *,
    attempts: int = 3,
) -> str | None:
    """Expire the silence `silence_id` on the peer at `url` now.

    Returns:
        None when it is expired, else why not (never raised).
    """
    endpoint = f"{url}/api/v2/silence/{quote(silence_id, safe='')}"
    try:
        await _request(session, config, "DELETE", endpoint, attempts=attempts)
    except (RetryableError, SilenceError) as exc:
        log.warning(
            "silence_expire_failed",
            extra={"alertmanager": url, "silence_id": silence_id, "error": str(exc)},
        )
        return str(exc)
    return None


async def list_silences(
    session: aiohttp.ClientSession, config: AlertmanagerConfig, url: str, *, attempts: int = 3
) -> list[dict[str, Any]]:
    """Every silence the peer at `url` holds, active, pending and expired, as it returns them.

    Raises:
        SilenceError: the peer refused, could not be reached, or did not answer a JSON list.
    """
    try:
        text = await _request(session, config, "GET", f"{url}/api/v2/silences", attempts=attempts)
    except RetryableError as exc:
        raise SilenceError(str(exc)) from None
    try:
        silences = json.loads(text)
    except ValueError:
        raise SilenceError(f"{url}: the answer is not JSON: {text[:_EXCERPT]}") from None
    if not isinstance(silences, list):
        raise SilenceError(f"{url}: the answer is not a list: {text[:_EXCERPT]}")
    return [s for s in silences if isinstance(s, dict)]


def _silence_id(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        raise SilenceError(f"the answer is not JSON: {text[:_EXCERPT]}") from None
    silence_id = doc.get("silenceID") if isinstance(doc, dict) else None
    if not isinstance(silence_id, str) or not silence_id:
        raise SilenceError(f"the answer has no silenceID: {text[:_EXCERPT]}")
    return silence_id


async def _request(
    session: aiohttp.ClientSession,
    config: AlertmanagerConfig,
    method: str,
    endpoint: str,
    *,
    body: str | None = None,
    attempts: int,
) -> str:
    """The body of a 2xx answer to `method endpoint`, retrying what is worth it.

    Raises:
        RetryableError: still failing after `attempts` tries.
        SilenceError: refused (not retried).
    """

    def report(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "silence_retry",
            extra={
                "alertmanager": endpoint,
                "method": method,
                "attempt": state.attempt_number,
                "error": str(error),
            },
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, attempts)),
        retry=retry_if_exception_type(RetryableError),
        wait=backoff(_BACKOFF_FIRST, _BACKOFF_CAP, jitter=_JITTER),
        before_sleep=report,
        reraise=True,
    )
    text = ""
    async for attempt in retrying:
        with attempt:
            text = await _request_once(session, config, method, endpoint, body)
    return text


async def _request_once(
    session: aiohttp.ClientSession,
    config: AlertmanagerConfig,
    method: str,
    endpoint: str,
    body: str | None,
) -> str:
    headers = {"Accept": "application/json", **auth_headers(config)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        async with session.request(
            method,
            endpoint,
            data=body,
            headers=headers,
            ssl=config.ssl,  # built (and checked) with the config
            timeout=aiohttp.ClientTimeout(total=config.timeout),
        ) as resp:
            status, text = resp.status, await resp.text()
    except Exception as exc:
        if not is_retryable(exc):
            raise
        raise RetryableError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    outcome = classify_status(status)
    if outcome is Outcome.RETRY:
        raise RetryableError(f"HTTP {status}: {text.strip()[:_EXCERPT]}")
    if outcome is Outcome.REJECTED:
        raise SilenceError(f"HTTP {status}: {text.strip()[:_EXCERPT]}")
    return text


__all__ = [
    "SilenceError",
    "SilenceOutcome",
    "create_silences",
    "expire_silence",
    "list_silences",
    "silence_body",
]
