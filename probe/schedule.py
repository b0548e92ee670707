"""Fixed-rate scheduling of checks: no drift, spread starts, no overlap, a global cap.

The arithmetic is pure and tested on its own; `Scheduler` applies it on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from probe.config import TargetConfig

log = logging.getLogger("vigil.probe.schedule")


def first_due(start: float, interval: float, jitter: float) -> float:
    """When a target's first check is due: somewhere in its first interval.

    `jitter` is a fraction in [0, 1); spreading first runs keeps targets from firing together.
    """
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    return start + jitter * interval


def due_at(first: float, interval: float, index: int) -> float:
    """When check number `index` is due; computed from the start, so errors never accumulate."""
    return first + index * interval


def next_index(first: float, interval: float, done: int, now: float) -> int:
    """The slot to wait for after slot `done`.

    Normally `done + 1`. Slots that could only start more than one interval late are skipped:
    a probe that fell behind resumes its rhythm rather than firing a burst of stale checks.
    """
    oldest_allowed = math.ceil((now - interval - first) / interval)
    return max(done + 1, oldest_allowed)


# Overload: while the event loop wakes checks this late on average, it has more work than
# it can run, and every further check slows all those in flight until they time out and
# report their targets down (measured at 2,000 checks/s offered: nearly every check timed
# out). New starts are shed, skipped as `overload`, until the average falls again. The
# lateness is the timer's (how late the loop woke the target), not the wait for a free slot:
# checks hanging on a dead target hold slots without loading the loop, and shedding then
# would turn an outage into silence.
OVERLOAD_LATENESS = 0.05
# The average forgets with time, not per start: a second after the loop is on time again it
# has mostly recovered, however few targets there are to start.
LATENESS_TAU = 1.0
# One sample counts at most this much: a stall of a minute is one bad second, not a minute.
LATENESS_CAP = 1.0


def smoothed(average: float, sample: float, elapsed: float, tau: float = LATENESS_TAU) -> float:
    """An exponentially weighted moving average in time, after one more (capped) sample."""
    weight = 1.0 - math.exp(-max(0.0, elapsed) / tau)
    return average + (min(max(0.0, sample), LATENESS_CAP) - average) * weight


# Runs one check; returns whether it failed (so the scheduler may confirm it quickly).
RunCheck = Callable[[TargetConfig, float], Awaitable[bool | None]]
OnEvent = Callable[[str, str], None]
OnLateness = Callable[[str, float], None]


class _Clockwork:
    """One target's place in its schedule: the slot it waits for and its timer."""

    __slots__ = ("due", "first", "index", "running", "target", "timer")

    def __init__(self, target: TargetConfig, first: float) -> None:
        self.target = target
        self.first = first
        self.index = 0
        self.due = first
        self.timer: asyncio.TimerHandle | None = None
        self.running: asyncio.Task[None] | None = None


class Scheduler:
    """Runs each target's checks on a fixed rate until stopped.

    Each target has a timer, not a sleeping task: the timer's callback starts the check in
    the same turn of the event loop. A task woken by its timer would start it one turn later,
    and on a probe running 1,000 checks a second one turn is often a millisecond or more.
    """

    def __init__(
        self,
        targets: Sequence[TargetConfig],
        run_check: RunCheck,
        *,
        max_in_flight: int,
        on_skip: OnEvent | None = None,
        on_lateness: OnLateness | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = list(targets)
        self._run_check = run_check
        self._slots = asyncio.Semaphore(max_in_flight)
        self._on_skip = on_skip or (lambda _t, _r: None)
        self._on_lateness = on_lateness or (lambda _t, _s: None)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wall = wall_clock
        # Not loop.time(): uvloop's is cached per iteration at millisecond resolution, which
        # would put a millisecond of error into every scheduled_at.
        self._clock = clock
        self._wall_offset = 0.0
        self._clockworks: list[_Clockwork] = []
        self._checks: set[asyncio.Task[None]] = set()
        # Targets being re-checked to confirm a failure, and whether stop() was called.
        self._confirming: set[str] = set()
        self._stopping = False
        # Smoothed lateness of the loop's wake-ups, in seconds (see OVERLOAD_LATENESS), as of
        # `_lateness_at`.
        self._lateness = 0.0
        self._lateness_at: float | None = None

    def start(self) -> None:
        """Start every target's timer."""
        mono_start = self._clock()
        # Results carry wall-clock times; the schedule runs on the monotonic clock so a wall
        # clock step (NTP) neither bunches nor stalls checks.
        self._wall_offset = self._wall() - mono_start
        for target in self._targets:
            first = first_due(mono_start, target.interval, self._rng.random())
            work = _Clockwork(target, first)
            self._clockworks.append(work)
            self._arm(work)

    def _arm(self, work: _Clockwork) -> None:
        if self._stopping:
            return
        # uvloop's timers have millisecond granularity and may fire a little early: `_due`
        # re-arms until the slot has really come.
        delay = max(0.0, work.due - self._clock())
        work.timer = asyncio.get_running_loop().call_later(delay, self._due, work)

    def _due(self, work: _Clockwork) -> None:
        try:
            now = self._clock()
            if work.due > now:
                return
            self._fire(work, now)
        except Exception:  # a bug must cost one check, never the target's schedule
            log.exception("schedule_failed", extra={"target": work.target.name})
            work.index += 1
            work.due = due_at(work.first, work.target.interval, work.index)
        finally:
            self._arm(work)

    def _fire(self, work: _Clockwork, woke: float) -> None:
        target, due = work.target, work.due
        running = work.running
        if running is not None and not running.done():
            # Never two checks of one target at once; the overrun is recorded, not stacked.
            # A slot taken by a confirming re-check is not an overrun: it is replaced.
            confirming = target.name in self._confirming
            self._on_skip(target.name, "confirming" if confirming else "overrun")
        elif self._overloaded(woke, woke - due):
            self._on_skip(target.name, "overload")
        else:
            work.running = asyncio.get_running_loop().create_task(self._one(target, due))
            self._checks.add(work.running)
            work.running.add_done_callback(self._checks.discard)
        following = next_index(work.first, target.interval, work.index, self._clock())
        for _ in range(following - work.index - 1):
            self._on_skip(target.name, "late")
        work.index = following
        work.due = due_at(work.first, target.interval, following)

    def _overloaded(self, now: float, woke_late: float) -> bool:
        """Whether to shed this start: the loop has been waking targets late on average.

        Whatever the target: exempting overdue ones (tried) forced more starts than an
        overloaded probe can run, and brought back the collapse, checks starved of CPU timing
        out and reporting their targets down. Stale results say "this probe is overloaded";
        the average forgets within seconds once the loop is on time again.
        """
        elapsed = now - self._lateness_at if self._lateness_at is not None else 0.0
        self._lateness = smoothed(self._lateness, woke_late, elapsed)
        self._lateness_at = now
        return self._lateness > OVERLOAD_LATENESS

    async def _one(self, target: TargetConfig, due: float) -> None:
        wall_offset = self._wall_offset
        async with self._slots:
            lateness = self._clock() - due
            if lateness > target.interval:
                # Waited for a free slot longer than an interval: the result would be stale.
                self._on_skip(target.name, "late")
                return
            self._on_lateness(target.name, max(0.0, lateness))
            failed = await self._run_check(target, due + wall_offset)
        await self._confirm(target, due, wall_offset, bool(failed))

    async def _confirm(
        self, target: TargetConfig, due: float, wall_offset: float, failed: bool
    ) -> None:
        """Re-check a failed target every `retry_interval`, up to `confirm_retries` times.

        Stops at the first pass or on `stop`. A re-check may run into the next regular slot
        (a hung target's checks take their whole timeout): that slot is then skipped as
        `confirming`, never run twice at once.
        """
        retry = target.retry_interval
        if retry is None or retry >= target.interval:
            return
        self._confirming.add(target.name)
        try:
            for _ in range(target.confirm_retries):
                if not failed or self._stopping:
                    return
                at = self._clock() + retry
                while (delay := at - self._clock()) > 0:  # noqa: ASYNC110 - a timer
                    await asyncio.sleep(delay)
                if self._stopping:
                    return
                async with self._slots:
                    failed = bool(await self._run_check(target, at + wall_offset))
        finally:
            self._confirming.discard(target.name)

    async def stop(self, grace: float) -> None:
        """Stop scheduling; let checks in flight finish for up to `grace` seconds."""
        self._stopping = True
        for work in self._clockworks:
            if work.timer is not None:
                work.timer.cancel()
        self._clockworks.clear()
        if self._checks:
            _, pending = await asyncio.wait(set(self._checks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
