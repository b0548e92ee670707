"""A bounded, ordered buffer of results waiting for the broker."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from wire.result import ProbeResult


class ResultBuffer:
    """FIFO of results with a size bound; when full the oldest result is dropped and counted.

    A result leaves the buffer only once the broker has acknowledged it (`ack_through`), so a
    connection lost mid-publish loses nothing: the same results are sent again, and the
    aggregator drops the duplicates by (probe, boot_id, seq).

    Acknowledged results are kept for `replay_window` seconds more: a broker that crashes
    loses what it acknowledged since its last save to disk (mosquitto saves every
    `autosave_interval`), so after a reconnect `rewind` queues them again. The aggregator
    ignores the ones it already has; the ones the crash lost arrive.
    """

    def __init__(
        self,
        capacity: int,
        on_drop: Callable[[], None] = lambda: None,
        *,
        replay_window: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._on_drop = on_drop
        self._replay_window = replay_window
        self._clock = clock
        self._items: deque[tuple[int, ProbeResult]] = deque()
        # Acknowledged results, oldest first, with when they were acknowledged.
        self._acked: deque[tuple[float, int, ProbeResult]] = deque()
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
        now = self._clock()
        while self._items and self._items[0][0] <= last_id:
            item_id, result = self._items.popleft()
            if self._replay_window > 0:
                self._acked.append((now, item_id, result))
            removed += 1
        self._trim(now)
        if not self._items:
            self._not_empty.clear()
            self._empty.set()
        return removed

    def _trim(self, now: float) -> None:
        while self._acked and (
            now - self._acked[0][0] > self._replay_window or len(self._acked) > self._capacity
        ):
            self._acked.popleft()

    def rewind(self) -> int:
        """Queue the results acknowledged within `replay_window` again, ahead of the rest.

        Call after a reconnect. They keep their ids and order, so the wire order (and each
        retained topic's final value, the newest result) is as before. Returns how many.
        """
        self._trim(self._clock())
        again = [(item_id, result) for _, item_id, result in self._acked]
        self._acked.clear()
        # Room is kept for what was not sent yet: replays are the first to go.
        again = again[max(0, len(again) + len(self._items) - self._capacity) :]
        self._items.extendleft(reversed(again))
        if self._items:
            self._not_empty.set()
            self._empty.clear()
        return len(again)

    async def wait_not_empty(self) -> None:
        """Return once at least one result is buffered."""
        await self._not_empty.wait()

    async def wait_empty(self) -> None:
        """Return once every buffered result has been acknowledged."""
        await self._empty.wait()
