"""Waiting on observable state with a generous bound, instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(predicate: Callable[[], object], limit: float = 10.0, what: str = "") -> None:
    """Poll `predicate` until it is truthy; fail the test after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def wait_until_async(
    predicate: Callable[[], Awaitable[object]], limit: float = 10.0, what: str = ""
) -> None:
    """Like `wait_until`, for a predicate that has to await (an HTTP call, say)."""
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what or predicate}")
        await asyncio.sleep(0.1)
