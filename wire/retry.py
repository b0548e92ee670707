"""The backoff every retry loop in Vigil uses: exponential, capped, with jitter."""

from __future__ import annotations

from tenacity import wait_exponential, wait_random
from tenacity.wait import wait_base


def backoff(first: float, cap: float, jitter: float) -> wait_base:
    """Waits of about `first`, 2x, 4x ... up to `cap` seconds, plus up to `jitter` at random.

    Jitter keeps a fleet of probes from reconnecting to a restarted broker in lockstep.
    """
    return wait_exponential(multiplier=first, max=cap) + wait_random(0, jitter)
