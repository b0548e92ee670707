"""A bounded, ordered buffer of results waiting for the broker."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from wire.result import ProbeResult


class Outgoing(NamedTuple):
    """A result handed to the sender: its buffer id, the result, and the JSON to send."""

    item_id: int
    result: ProbeResult
    payload: bytes


class ResultBuffer:
    """FIFO of results with a size bound; when full the oldest result is dropped and counted.

    The sender `take`s results as they come, in order, and each leaves the buffer only once
    the broker has acknowledged it (`ack_through`), so a connection lost mid-publish loses
    nothing: after `rewind` the same results are taken again, and the aggregator drops the
    duplicates by (probe, boot_id, seq).

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
        # Unacknowledged results, oldest first. The first `_taken` were handed to the sender
        # (and are kept encoded, as sent); a replayed one stays encoded until taken again.
        self._items: deque[tuple[int, ProbeResult | bytes]] = deque()
        self._taken = 0
        # Acknowledged results, encoded, oldest first, with when they were first acknowledged.
        self._acked: deque[tuple[float, int, bytes]] = deque()
        # Replayed results waiting again, by id: when they were first acknowledged. The
        # window counts from then, so a flapping link cannot keep one result alive forever.
        self._replays: dict[int, float] = {}
        self._next_id = 0
        self._untaken = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, result: ProbeResult) -> None:
        """Append a result, dropping the oldest when the buffer is full."""
        if len(self._items) >= self._capacity:
            dropped_id, _ = self._items.popleft()
            self._replays.pop(dropped_id, None)
            self._taken = max(0, self._taken - 1)
            self._on_drop()
        self._items.append((self._next_id, result))
        self._next_id += 1
        self._untaken.set()
        self._empty.clear()

    def take(self, limit: int) -> list[Outgoing]:
        """Up to `limit` of the oldest results not taken yet, encoded; they stay buffered.

        Each is encoded once: the bytes taken are the bytes kept for a replay.
        """
        start = self._taken
        stop = min(start + limit, len(self._items))
        batch: list[Outgoing] = []
        for i in range(start, stop):
            item_id, entry = self._items[i]
            if isinstance(entry, bytes):
                payload, entry = entry, ProbeResult.from_json(entry)
            else:
                payload = entry.to_json()
                self._items[i] = (item_id, payload)
            batch.append(Outgoing(item_id, entry, payload))
        self._taken = stop
        if stop == len(self._items):
            self._untaken.clear()
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
            self._taken = max(0, self._taken - 1)
            first_acked = self._replays.pop(item_id, now)
            if self._replay_window > 0:
                encoded = result if isinstance(result, bytes) else result.to_json()
                self._acked.append((first_acked, item_id, encoded))
            removed += 1
        self._trim(now)
        if not self._items:
            self._empty.set()
        return removed

    def _trim(self, now: float) -> None:
        while self._acked and (
            now - self._acked[0][0] > self._replay_window or len(self._acked) > self._capacity
        ):
            self._acked.popleft()

    def rewind(self) -> int:
        """Queue the results acknowledged within `replay_window` again, ahead of the rest.

        Call after a reconnect: every unacknowledged result is taken again too. They keep
        their ids and order, and their first acknowledgement time: each is replayed only
        while that is within the window.
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
        self._taken = 0
        if self._items:
            self._untaken.set()
            self._empty.clear()
        return len(again)

    async def wait_untaken(self) -> None:
        """Return once a result waits to be taken, or `wake` was called."""
        await self._untaken.wait()

    def wake(self) -> None:
        """Wake the sender from `wait_untaken` with nothing new (it has something to notice)."""
        self._untaken.set()

    async def wait_empty(self) -> None:
        """Return once every buffered result has been acknowledged."""
        await self._empty.wait()
