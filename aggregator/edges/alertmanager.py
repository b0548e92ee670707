"""Delivering alerts to Alertmanager's v2 API: the only module that speaks HTTP to it.

One `PeerSender` per Alertmanager URL, each with its own bounded queue and task, so a dead
peer never delays the others. The queue holds the latest payload per alert, so an outage
loses nothing that matters: when the peer returns it gets each alert's current state.
Like alertmanager's own `notify/util.go`, 5xx, timeouts and connection errors are retried
(exponential backoff with jitter); other 4xx are not.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type

from aggregator.config import AlertmanagerConfig
from aggregator.core.alerts import fingerprint
from runtime.clock import rfc3339
from runtime.retry import backoff
from runtime.secrets import resolve_secret

log = logging.getLogger("vigil.aggregator.edges.alertmanager")


class Outcome(enum.StrEnum):
    """How one POST went; the `outcome` label of `vigil_alertmanager_posts_total`."""

    SUCCESS = "success"
    RETRY = "retry"
    REJECTED = "rejected"


def classify_status(status: int) -> Outcome:
    """2xx is delivered; 5xx and 429 are worth retrying; any other status is not."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status >= 500 or status == 429:
        return Outcome.RETRY
    return Outcome.REJECTED


def is_retryable(exc: BaseException) -> bool:
    """Connection errors and timeouts are retried; anything else is a bug."""
    return isinstance(exc, aiohttp.ClientError | TimeoutError | OSError)


class RetryableError(Exception):
    """A POST failed in a way that is worth trying again."""


def auth_headers(config: AlertmanagerConfig) -> dict[str, str]:
    """The Authorization header for Alertmanager (secret files were read with the config)."""
    if config.basic_auth is not None:
        ba = config.basic_auth
        password = resolve_secret(ba.password, ba.password_file) or ""
        token = base64.b64encode(f"{ba.username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    bearer = resolve_secret(config.bearer_token, config.bearer_token_file)
    return {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}


class PeerSender:
    """Delivers alert updates to one Alertmanager, in batches, retrying what is worth it."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        config: AlertmanagerConfig,
        *,
        headers: dict[str, str],
        on_post: Callable[[str, Outcome, float], None] = lambda _u, _o, _s: None,
        on_drop: Callable[[str], None] = lambda _u: None,
    ) -> None:
        self.url = url
        self._endpoint = f"{url}/api/v2/alerts"
        self._session = session
        self._config = config
        self._headers = {"Content-Type": "application/json", **headers}
        self._ssl = config.ssl  # built (and checked) with the config
        self._on_post = on_post
        self._on_drop = on_drop
        # Latest payload per alert, oldest update first.
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def enqueue(self, payloads: Iterable[dict[str, Any]]) -> None:
        """Queue alert updates; a newer update of the same alert replaces the older."""
        for payload in payloads:
            fp = fingerprint(payload["labels"])
            self._pending.pop(fp, None)
            self._pending[fp] = payload
            if len(self._pending) > self._config.queue_size:
                oldest = next(iter(self._pending))
                del self._pending[oldest]
                self._on_drop(self.url)
        if self._pending:
            self._wake.set()

    async def run(self) -> None:
        """Deliver forever: wait for updates, post them, retry while the peer is away."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._deliver_one_batch()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(RetryableError),
            wait=backoff(0.5, 30.0, jitter=1.0),
            before_sleep=lambda rs: log.warning(
                "alertmanager_retry",
                extra={
                    "alertmanager": self.url,
                    "attempt": rs.attempt_number,
                    "error": str(rs.outcome.exception()) if rs.outcome else "",
                    "queued": len(self._pending),
                },
            ),
            reraise=True,
        )

    async def _deliver_one_batch(self) -> None:
        async for attempt in self._retrying():
            with attempt:
                # Taken afresh on every attempt, so a retry carries each alert's latest state.
                batch = list(self._pending.items())[: self._config.batch_size]
                outcome = await self._post([payload for _, payload in batch])
        if outcome is Outcome.REJECTED and len(batch) > 1:
            # Alertmanager refuses a whole batch for one bad alert: send them one by one, so
            # only that one is lost.
            log.warning("alertmanager_batch_split", extra={"alertmanager": self.url})
            for fp, payload in batch:
                latest = self._pending.get(fp, payload)
                async for attempt in self._retrying():
                    with attempt:
                        await self._post([latest])
        for fp, payload in batch:
            if self._pending.get(fp) is payload:
                del self._pending[fp]

    async def _post(self, alerts: list[dict[str, Any]]) -> Outcome:
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._endpoint,
                data=json.dumps(alerts),
                headers=self._headers,
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            ) as resp:
                body = (await resp.text())[:500]
                outcome = classify_status(resp.status)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            self._on_post(self.url, Outcome.RETRY, time.perf_counter() - started)
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        self._on_post(self.url, outcome, time.perf_counter() - started)
        if outcome is Outcome.RETRY:
            raise RetryableError(f"HTTP {resp.status}: {body}")
        if outcome is Outcome.REJECTED:
            # Not worth retrying: the same payload would be refused again.
            log.error(
                "alertmanager_rejected",
                extra={
                    "alertmanager": self.url,
                    "status": resp.status,
                    "body": body,
                    "alerts": len(alerts),
                },
            )
        return outcome


class ConsoleSink:
    """With no Alertmanager configured, alerts go to the log: once when they fire, once resolved."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._state: dict[str, str] = {}

    def enqueue(self, payloads: Iterable[dict[str, Any]]) -> None:
        """Log each alert whose status changed."""
        now_iso = rfc3339(self._clock())
        for payload in payloads:
            fp = fingerprint(payload["labels"])
            status = "resolved" if payload["endsAt"] <= now_iso else "firing"
            if self._state.get(fp) == status:
                continue
            self._state[fp] = status
            log.warning(
                "alert",
                extra={
                    "status": status,
                    "alertname": payload["labels"].get("alertname"),
                    "labels": payload["labels"],
                    "summary": payload["annotations"].get("summary"),
                    "startsAt": payload["startsAt"],
                },
            )
