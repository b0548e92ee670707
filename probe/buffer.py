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

    Acknowledged results are kept as the JSON they were sent as, decoded again only when a
    rewind puts them back in front of the publisher: bytes are invisible to the garbage
    collector, while a minute of result models at 1,000 checks/s is some 300,000 objects that
    every full collection would walk (a pause of about 90 ms, measured, see docs/performance.md).
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
        # Waiting results; a replayed one stays encoded until `peek` hands it out.
        self._items: deque[tuple[int, ProbeResult | bytes]] = deque()
        # Acknowledged results, encoded, oldest first, with when they were first acknowledged.
        self._acked: deque[tuple[float, int, bytes]] = deque()
        # Replayed results waiting again, by id: when they were first acknowledged. The
        # window counts from then, so a flapping link cannot keep one result alive forever.
        self._replays: dict[int, float] = {}
        self._next_id = 0
        self._not_empty = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, result: ProbeResult) -> None:
        """Append a result, dropping the oldest when the buffer is full."""
        if len(self._items) >= self._capacity:
            dropped_id, _ = self._items.popleft()
            self._replays.pop(dropped_id, None)
            self._on_drop()
        self._items.append((self._next_id, result))
        self._next_id += 1
        self._not_empty.set()
        self._empty.clear()

    def peek(self, limit: int) -> list[tuple[int, ProbeResult]]:
        """Up to `limit` oldest results with their buffer ids, left in place."""
        count = min(limit, len(self._items))
        batch: list[tuple[int, ProbeResult]] = []
        for i in range(count):
            item_id, entry = self._items[i]
            if isinstance(entry, bytes):
                entry = ProbeResult.from_json(entry)
                self._items[i] = (item_id, entry)
            batch.append((item_id, entry))
        return batch

    def is_replay(self, item_id: int) -> bool:
        """Whether the result with this id was acknowledged before and is being sent again."""
        return item_id in self._replays

    def ack_through(self, last_id: int) -> int:
        """Remove every result up to and including id `last_id`; returns how many."""
        removed = 0
        now = self._clock()
        while self._items and self._items[0][0] <= last_id:
            item_id, result = self._items.popleft()
            first_acked = self._replays.pop(item_id, now)
            if self._replay_window > 0:
                encoded = result if isinstance(result, bytes) else result.to_json()
                self._acked.append((first_acked, item_id, encoded))
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

        Call after a reconnect. They keep their ids and order, and their first
        acknowledgement time: each is replayed only while that is within the window.
        Publish them unretained (`is_replay`): the retained value stays the newest result.
        Returns how many.
        """
        self._trim(self._clock())
        acked = list(self._acked)
        self._acked.clear()
        # Room is kept for what was not sent yet: replays are the first to go.
        acked = acked[max(0, len(acked) + len(self._items) - self._capacity) :]
        for first_acked, item_id, _ in acked:
            self._replays[item_id] = first_acked
        again = [(item_id, result) for _, item_id, result in acked]
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
