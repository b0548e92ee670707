"""Rollups of results and verdicts into time buckets, in tiers. Pure.

Results and times in, rows out; `edges/historydb.py` stores the rows.

Per (target, region) and bucket: checks, failures, inconclusive checks, and the latency of the
successful checks (p50/p95 from a log-bucket sketch, max exact). Per target and bucket: how
long its verdict was up, degraded, down (down inside a maintenance window apart) and unknown.
Raw results are not kept.

Results go into the open minute only; when a minute closes it is merged into the open hour and
day, so a result costs one sketch update. Closed buckets are final rows; the open hour and day
are written too (with their sketch) so a restart resumes them instead of starting them empty.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from wire.result import ProbeResult
from wire.state import Verdict

# Relative accuracy of the latency percentiles: a value is reported within 2% of the truth.
SKETCH_GAMMA = 1.04
_LOG_GAMMA = math.log(SKETCH_GAMMA)
# Latencies at or under this many ms share one bucket (reported as this value).
SKETCH_FLOOR_MS = 0.01
_PAIR = struct.Struct("<hI")


class Tier(enum.IntEnum):
    """A rollup granularity: its value is the bucket's length in seconds."""

    MINUTE = 60
    HOUR = 3600
    DAY = 86400

    @property
    def label(self) -> str:
        """The tier's name in config, API and the database."""
        return self.name.lower()


def bucket_of(at: float, tier: Tier) -> int:
    """The start (epoch seconds) of the bucket of `tier` that holds `at` (UTC-aligned)."""
    return int(at // tier.value) * tier.value


class Sketch:
    """Counts of values in log-spaced buckets: percentiles within `SKETCH_GAMMA` accuracy."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, ms: float) -> None:
        """Count one value."""
        i = 0 if ms <= SKETCH_FLOOR_MS else math.ceil(math.log(ms / SKETCH_FLOOR_MS) / _LOG_GAMMA)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.n += 1

    def merge(self, other: Sketch) -> None:
        """Add another sketch's counts to this one."""
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.n += other.n

    def quantile(self, q: float) -> float | None:
        """The value at rank `q` (0..1), or None when empty: nearest rank, bucket midpoint."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return _value(i)
        return _value(max(self.counts))  # pragma: no cover - ranks never pass n

    def encode(self) -> bytes:
        """Compact bytes: (bucket index, count) pairs."""
        return b"".join(_PAIR.pack(i, c) for i, c in sorted(self.counts.items()))

    @classmethod
    def decode(cls, blob: bytes) -> Sketch:
        """The sketch `encode` wrote; ValueError on bytes it did not write."""
        if len(blob) % _PAIR.size:
            raise ValueError("not a sketch")
        s = cls()
        last = None
        for i, c in _PAIR.iter_unpack(blob):
            # `encode` writes strictly increasing indices, each with a positive count.
            if c <= 0 or (last is not None and i <= last):
                raise ValueError("not a sketch")
            last = i
            s.counts[i] = c
            s.n += c
        return s


def _value(i: int) -> float:
    if i <= 0:
        return SKETCH_FLOOR_MS
    # The bucket (floor*g^(i-1), floor*g^i]: its midpoint in relative terms.
    return SKETCH_FLOOR_MS * SKETCH_GAMMA**i * 2 / (1 + SKETCH_GAMMA)


@dataclass(slots=True)
class RegionBucket:
    """One (target, region)'s checks in one bucket."""

    checks: int = 0
    failures: int = 0
    inconclusive: int = 0
    max_ms: float = 0.0
    sketch: Sketch = field(default_factory=Sketch)

    def copy(self) -> RegionBucket:
        """An independent copy (the writer thread reads it while this one changes)."""
        sketch = Sketch()
        sketch.counts, sketch.n = dict(self.sketch.counts), self.sketch.n
        return RegionBucket(self.checks, self.failures, self.inconclusive, self.max_ms, sketch)

    def merge(self, other: RegionBucket) -> None:
        """Fold a finer bucket into this one."""
        self.checks += other.checks
        self.failures += other.failures
        self.inconclusive += other.inconclusive
        self.max_ms = max(self.max_ms, other.max_ms)
        self.sketch.merge(other.sketch)


@dataclass(slots=True)
class TargetBucket:
    """How long one target's verdict was each value in one bucket, in ms."""

    up_ms: int = 0
    degraded_ms: int = 0
    down_ms: int = 0
    # Down, but inside a maintenance window: left out of the SLO.
    maint_ms: int = 0
    unknown_ms: int = 0

    def add(self, verdict: Verdict, ms: int, maintenance_ms: int = 0) -> None:
        """Count `ms` of `verdict`, of which `maintenance_ms` inside a maintenance window."""
        if verdict is Verdict.UP:
            self.up_ms += ms
        elif verdict is Verdict.DEGRADED:
            self.degraded_ms += ms
        elif verdict is Verdict.DOWN:
            maint = min(max(maintenance_ms, 0), ms)
            self.maint_ms += maint
            self.down_ms += ms - maint
        else:
            self.unknown_ms += ms

    def merge(self, other: TargetBucket) -> None:
        """Fold a finer bucket into this one."""
        self.up_ms += other.up_ms
        self.degraded_ms += other.degraded_ms
        self.down_ms += other.down_ms
        self.maint_ms += other.maint_ms
        self.unknown_ms += other.unknown_ms


@dataclass(frozen=True, slots=True)
class RegionRow:
    """A (target, region) bucket to store; `sketch` only while the bucket is open."""

    tier: Tier
    target: str
    region: str
    bucket: int
    data: RegionBucket
    final: bool


@dataclass(frozen=True, slots=True)
class TargetRow:
    """A target's verdict bucket to store."""

    tier: Tier
    target: str
    bucket: int
    data: TargetBucket
    final: bool


@dataclass
class Flushed:
    """What one flush asks the store to write."""

    regions: list[RegionRow] = field(default_factory=list)
    targets: list[TargetRow] = field(default_factory=list)
    # Version changes seen: (target, region, at, version), a deploy marker each.
    deploys: list[tuple[str, str, float, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.regions or self.targets or self.deploys)


_COARSE = (Tier.HOUR, Tier.DAY)
# Targets or pairs handled per slice of a flush: a few milliseconds of the event loop.
SLICE = 500
# The open hour and day buckets are written every this many minutes and at a clean stop
# (closed ones at once), only so a restart can resume them: the API reads the open ones from
# memory (`open_target`, `open_regions`). Every minute would write a page per (target,
# region) a minute and double the objects a flush makes (GC pauses at 10,000 x 3).
CHECKPOINT_MINUTES = 15
# Verdict time is counted between flushes (every minute) and transitions: a longer stretch
# means this process did not run (suspended, a VM paused) or its clock stepped forward. That
# is a gap, no data, never hours of the old verdict (nor a loop busy walking them minute by
# minute).
MAX_ACCRUAL_S = 300.0
# A version is marked as deployed at most once in this long per (target, region): a version
# flipping between results (a canary behind a load balancer) must not flood the table, while
# a new version is always marked at once (a quick return to the one before may not be).
DEPLOY_MARKER_EVERY_S = 300.0
# And at most this many markers per (target, region) in that time, whatever the versions (a
# version field that changes with every answer: a build id per pod, a timestamp).
DEPLOY_MARKERS_PER_WINDOW = 3

# How many seconds of [start, end) a maintenance window covers: (target, start, end).
MaintenanceOverlap = Callable[[str, float, float], float]


class Rollups:
    """The open buckets of every (target, region) and target, and what closes them."""

    def __init__(self, maintenance: MaintenanceOverlap = lambda _t, _start, _end: 0.0) -> None:
        self._maintenance = maintenance
        # The open minute per (target, region); its start.
        self._minute: dict[tuple[str, str], RegionBucket] = {}
        self._minute_start: int | None = None
        # The open hour and day buckets: (tier, target, region) -> (bucket start, data).
        self._coarse: dict[tuple[Tier, str, str], tuple[int, RegionBucket]] = {}
        # Verdicts: target -> (verdict, counted up to); and the open buckets of each tier.
        self._verdicts: dict[str, tuple[Verdict, float]] = {}
        self._target_open: dict[tuple[Tier, str], tuple[int, TargetBucket]] = {}
        # Target buckets closed by `_accrue`, written at the next flush.
        self._closed_targets: list[TargetRow] = []
        # The last version each (target, region) reported: a change is a deploy marker.
        self._versions: dict[tuple[str, str], str] = {}
        self._marked_at: dict[tuple[str, str, str], float] = {}
        # Per (target, region): (start of its marker window, markers in it).
        self._marker_budget: dict[tuple[str, str], tuple[float, int]] = {}
        self.markers_dropped = 0
        self._last_checkpoint: float | None = None

    # -- input ----------------------------------------------------------------------------

    def observe(
        self, result: ProbeResult, now: float | None = None
    ) -> tuple[str, str, float, str] | None:
        """Count one result in the open minute; a deploy marker if its version is new.

        The minute is the one open when the result arrives (closed by the next flush: a
        result may land in the minute before its arrival's by up to a tick).
        """
        if self._minute_start is None and now is not None:
            self._minute_start = bucket_of(now, Tier.MINUTE)
        marker = None
        key = (result.target, result.region)
        b = self._minute.get(key)
        if b is None:
            b = self._minute[key] = RegionBucket()
        version = result.version
        if version is not None and self._versions.get(key) != version:
            # Rate by arrival (a probe's clock may step), dated by the check.
            seen = now if now is not None else result.started_at
            self._versions[key] = version
            last = self._marked_at.get((*key, version))
            if (last is None or not 0 <= seen - last < DEPLOY_MARKER_EVERY_S) and self._spend(
                key, seen
            ):
                if len(self._marked_at) > 4 * max(len(self._versions), 1000):
                    self._marked_at = {  # the old ones no longer limit anything
                        k: at for k, at in self._marked_at.items()
                        if 0 <= seen - at < DEPLOY_MARKER_EVERY_S
                    }  # fmt: skip
                self._marked_at[(*key, version)] = seen
                marker = (result.target, result.region, result.started_at, version)
        b.checks += 1
        if result.inconclusive:
            b.inconclusive += 1
        elif not result.ok:
            b.failures += 1
        else:
            ms = result.duration_ms
            b.sketch.add(ms)
            if ms > b.max_ms:
                b.max_ms = ms
        return marker

    def _spend(self, key: tuple[str, str], seen: float) -> bool:
        """Whether a marker of `key` fits its budget now (and count it if so)."""
        start, spent = self._marker_budget.get(key, (seen, 0))
        if not 0 <= seen - start < DEPLOY_MARKER_EVERY_S:
            start, spent = seen, 0
        if spent >= DEPLOY_MARKERS_PER_WINDOW:
            self.markers_dropped += 1
            return False
        self._marker_budget[key] = (start, spent + 1)
        return True

    def verdict(self, target: str, verdict: Verdict, at: float) -> None:
        """The target's verdict is `verdict` from `at` on (time before counts as the old one)."""
        prior = self._verdicts.get(target)
        if prior is not None:
            self._accrue(target, prior[0], prior[1], at)
            at = max(at, prior[1])
        self._verdicts[target] = (verdict, at)

    def forget(self, target: str) -> None:
        """Stop counting a target's verdict time (it was forgotten by the engine)."""
        self._verdicts.pop(target, None)
        for marked in [k for k in self._marked_at if k[0] == target]:
            del self._marked_at[marked]
        for pair in [k for k in self._marker_budget if k[0] == target]:
            del self._marker_budget[pair]
        for tier in Tier:
            held = self._target_open.pop((tier, target), None)
            if held is not None:
                self._closed_targets.append(TargetRow(tier, target, *held, True))
        for key in [k for k in self._versions if k[0] == target]:
            del self._versions[key]

    def resume(
        self,
        rows: Iterable[RegionRow | TargetRow],
        versions: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        """Take back the open hour and day buckets, and last versions, a previous process stored."""
        self._versions.update(versions or {})
        for row in rows:
            if isinstance(row, RegionRow):
                self._coarse[(row.tier, row.target, row.region)] = (row.bucket, row.data)
            else:
                self._target_open[(row.tier, row.target)] = (row.bucket, row.data)

    # -- output ---------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a minute has closed since the last flush."""
        return self._minute_start is None or bucket_of(now, Tier.MINUTE) != self._minute_start

    def flush(self, now: float) -> Flushed:
        """`flush_slices` all at once."""
        out = Flushed()
        for part in self.flush_slices(now):
            out.regions += part.regions
            out.targets += part.targets
            out.deploys += part.deploys
        return out

    def flush_slices(self, now: float) -> Iterator[Flushed]:
        """Close the open minute (if it has ended) and say what to write, `SLICE` at a time.

        Yields the closed minute's rows, every hour or day bucket that closed, and a copy of
        each open hour and day bucket (with its sketch) so a restart can resume them. The
        caller may let the event loop run between slices: results that arrive meanwhile go
        into the new minute, verdict changes are counted up to their time.
        """
        yield from self._flush(now, now)

    def final_slices(self, now: float) -> Iterator[Flushed]:
        """At a clean stop: close the open minute now, then every open hour and day bucket."""
        if self._minute_start is not None:
            # The minute is closed early: its row holds what it saw (a restart within the
            # same minute adds to it).
            yield from self._flush(max(now, self._minute_start + 60.0), now)
        out = self.open_rows()
        # Each target's open minute of verdict time too, closed as it stands (added to by a
        # restart within the minute, as the checks' minute row is).
        for (tier, target), (bucket, tdata) in list(self._target_open.items()):
            if tier is Tier.MINUTE:
                del self._target_open[(tier, target)]
                out.targets.append(TargetRow(tier, target, bucket, tdata, True))
        out.targets += self._closed_targets
        self._closed_targets = []
        yield out

    def _flush(self, now: float, until: float) -> Iterator[Flushed]:
        """Close the minute before `now`'s; verdict time is counted up to `until`."""
        current = bucket_of(now, Tier.MINUTE)
        if self._minute_start is None:
            self._minute_start = current
            self._last_checkpoint = until
            return
        if current <= self._minute_start:
            # The same minute, or the clock stepped back: keep counting into the open one
            # (buckets never close twice) until the clock is past it again.
            return
        start = self._minute_start
        minute, self._minute = self._minute, {}
        self._minute_start = current
        checkpoint = (
            self._last_checkpoint is None
            or until - self._last_checkpoint >= CHECKPOINT_MINUTES * 60
        )
        if checkpoint:
            self._last_checkpoint = until
        now = until
        names = list(self._verdicts)
        for i in range(0, len(names), SLICE):
            out = Flushed()
            for target in names[i : i + SLICE]:
                held = self._verdicts.get(target)
                if held is None:
                    continue
                verdict, since = held
                if since < now:
                    self._accrue(target, verdict, since, now)
                    self._verdicts[target] = (verdict, now)
                for tier in _COARSE if checkpoint else ():
                    open_row = self._target_open.get((tier, target))
                    if open_row is not None:
                        out.targets.append(
                            TargetRow(tier, target, open_row[0], replace(open_row[1]), False)
                        )
            out.targets += self._closed_targets
            self._closed_targets = []
            yield out
        if self._closed_targets:  # e.g. of targets forgotten, when none is left
            yield Flushed(targets=self._closed_targets)
            self._closed_targets = []
        items = list(minute.items())
        for i in range(0, len(items), SLICE):
            out = Flushed()
            for (target, region), b in items[i : i + SLICE]:
                out.regions.append(RegionRow(Tier.MINUTE, target, region, start, b, True))
                for tier in _COARSE:
                    key = (tier, target, region)
                    bucket = bucket_of(start, tier)
                    coarse = self._coarse.get(key)
                    if coarse is not None and coarse[0] != bucket:
                        del self._coarse[key]
                        out.regions.append(RegionRow(tier, target, region, *coarse, True))
                        coarse = None
                    if coarse is None:
                        coarse = self._coarse[key] = (bucket, RegionBucket())
                    coarse[1].merge(b)
            yield out
        if checkpoint:
            keys = list(self._coarse)
            for i in range(0, len(keys), SLICE):
                out = Flushed()
                for key in keys[i : i + SLICE]:
                    coarse = self._coarse.get(key)
                    if coarse is not None and coarse[0] + key[0].value > current:
                        out.regions.append(RegionRow(*key, coarse[0], coarse[1].copy(), False))
                yield out
        if bucket_of(start, Tier.HOUR) != bucket_of(current, Tier.HOUR):
            # Hours (and days) that ended with no result in their last minute close here.
            keys = list(self._coarse)
            for i in range(0, len(keys), SLICE):
                out = Flushed()
                for key in keys[i : i + SLICE]:
                    coarse = self._coarse.get(key)
                    if coarse is not None and coarse[0] + key[0].value <= current:
                        del self._coarse[key]
                        out.regions.append(RegionRow(*key, *coarse, True))
                yield out

    # -- the open buckets, for readers and a clean stop ------------------------------------

    def open_target(self, target: str) -> dict[Tier, tuple[int, TargetBucket]]:
        """Copies of one target's open hour and day verdict buckets (as of the last flush)."""
        out = {}
        for tier in _COARSE:
            held = self._target_open.get((tier, target))
            if held is not None:
                out[tier] = (held[0], replace(held[1]))
        return out

    def open_targets(self, tier: Tier) -> dict[str, tuple[int, TargetBucket]]:
        """Copies of every target's open bucket of `tier`."""
        return {
            target: (held[0], replace(held[1]))
            for (t, target), held in self._target_open.items()
            if t is tier
        }

    def open_regions(
        self, target: str, regions: Iterable[str]
    ) -> dict[tuple[Tier, str], tuple[int, RegionBucket]]:
        """Copies of one target's open hour and day buckets per region."""
        out = {}
        for tier in _COARSE:
            for region in regions:
                held = self._coarse.get((tier, target, region))
                if held is not None:
                    out[(tier, region)] = (held[0], held[1].copy())
        return out

    def open_rows(self) -> Flushed:
        """Every open hour and day bucket as rows to write (a clean stop: resume them all)."""
        out = Flushed()
        for (tier, target, region), (bucket, data) in self._coarse.items():
            out.regions.append(RegionRow(tier, target, region, bucket, data.copy(), False))
        for (tier, target), (bucket, tdata) in self._target_open.items():
            if tier is not Tier.MINUTE:
                out.targets.append(TargetRow(tier, target, bucket, replace(tdata), False))
        return out

    def _accrue(self, target: str, verdict: Verdict, start: float, end: float) -> None:
        """Count [start, end) of `verdict`, split at every tier's bucket edges."""
        if end <= start or end - start > MAX_ACCRUAL_S:
            return
        down = verdict is Verdict.DOWN
        for tier in Tier:
            t = start
            while t < end:
                bucket = bucket_of(t, tier)
                edge = min(end, bucket + tier.value)
                key = (tier, target)
                held = self._target_open.get(key)
                if held is not None and held[0] != bucket:
                    del self._target_open[key]
                    self._closed_targets.append(TargetRow(tier, target, held[0], held[1], True))
                    held = None
                if held is None:
                    held = self._target_open[key] = (bucket, TargetBucket())
                covered = self._maintenance(target, t, edge) if down else 0.0
                held[1].add(verdict, round((edge - t) * 1000), round(covered * 1000))
                t = edge
