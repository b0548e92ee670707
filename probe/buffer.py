"""A bounded, ordered buffer of results waiting for the broker."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from wire.result import ProbeResult


class ResultBuffer:
    """FIFO of results with a size bound; when full the oldest result is dropped and counted.

    A result leaves the buffer only once the broker has acknowledged it (`ack_through`), so a
    connection lost mid-publish loses nothing: the same results are sent again, and the
    aggregator drops the duplicates by (probe, boot_id, seq).
    """

    def __init__(self, capacity: int, on_drop: Callable[[], None] = lambda: None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._on_drop = on_drop
        self._items: deque[tuple[int, ProbeResult]] = deque()
        self._next_id = 0
        self._not_empty = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, result: ProbeResult) -> None:
        """Append a result, dropping the oldest when the buffer is full."""
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self._on_drop()
        self._items.append((self._next_id, result))
        self._next_id += 1
        self._not_empty.set()
        self._empty.clear()

    def peek(self, limit: int) -> list[tuple[int, ProbeResult]]:
        """Up to `limit` oldest results with their buffer ids, left in place."""
        count = min(limit, len(self._items))
        return [self._items[i] for i in range(count)]

    def ack_through(self, last_id: int) -> int:
        """Remove every result up to and including id `last_id`; returns how many."""
        removed = 0
        while self._items and self._items[0][0] <= last_id:
            self._items.popleft()
            removed += 1
        if not self._items:
            self._not_empty.clear()
            self._empty.set()
        return removed

    async def wait_not_empty(self) -> None:
        """Return once at least one result is buffered."""
        await self._not_empty.wait()

    async def wait_empty(self) -> None:
        """Return once every buffered result has been acknowledged."""
        await self._empty.wait()
