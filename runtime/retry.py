"""Retrying: the one backoff every loop uses, and the broker reconnect loop."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import aiomqtt
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base


def backoff(first: float, cap: float, jitter: float) -> wait_base:
    """Waits of about `first`, 2x, 4x ... up to `cap` seconds, plus up to `jitter` at random.

    Jitter keeps a fleet of probes from reconnecting to a restarted broker in lockstep.
    """
    return wait_exponential(multiplier=first, max=cap) + wait_random(0, jitter)


def backoff_delay(
    attempt: int, first: float, cap: float, jitter: float, rng: Callable[[], float] = random.random
) -> float:
    """The `attempt`-th wait of `backoff(first, cap, jitter)`, for loops tenacity does not run."""
    return float(min(cap, first * 2.0 ** (attempt - 1)) + jitter * rng())


def reconnecting(broker: str, cap: float, log: logging.Logger) -> AsyncRetrying:
    """The retry loop for connecting to the MQTT broker: forever, backing off up to `cap`.

    Build a fresh one for every outage, so a long healthy run does not inherit the delays
    of an old one.
    """

    def report(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "mqtt_connect_failed",
            extra={"broker": broker, "attempt": state.attempt_number, "error": str(error)},
        )

    return AsyncRetrying(
        wait=backoff(0.2, cap, jitter=0.5),
        retry=retry_if_exception_type((aiomqtt.MqttError, OSError)),
        before_sleep=report,
        reraise=True,
    )
