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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

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
        for i, c in _PAIR.iter_unpack(blob):
            s.counts[i] = s.counts.get(i, 0) + c
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

    def add(self, verdict: Verdict, ms: int, maintenance: bool) -> None:
        """Count `ms` of `verdict`."""
        if verdict is Verdict.UP:
            self.up_ms += ms
        elif verdict is Verdict.DEGRADED:
            self.degraded_ms += ms
        elif verdict is Verdict.DOWN:
            if maintenance:
                self.maint_ms += ms
            else:
                self.down_ms += ms
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

# In maintenance at this time? (target, epoch seconds)
InMaintenance = Callable[[str, float], bool]


class Rollups:
    """The open buckets of every (target, region) and target, and what closes them."""

    def __init__(self, in_maintenance: InMaintenance = lambda _t, _at: False) -> None:
        self._in_maintenance = in_maintenance
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

    # -- input ----------------------------------------------------------------------------

    def observe(self, result: ProbeResult, now: float) -> Flushed:
        """Count one result in the open minute of its arrival; rows if a minute closed."""
        flushed = self.flush(now) if self._minute_due(now) else Flushed()
        key = (result.target, result.region)
        b = self._minute.get(key)
        if b is None:
            b = self._minute[key] = RegionBucket()
        version = result.version
        if version is not None and self._versions.get(key) != version:
            self._versions[key] = version
            flushed.deploys.append((result.target, result.region, result.started_at, version))
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
        return flushed

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

    def _minute_due(self, now: float) -> bool:
        return self._minute_start is not None and bucket_of(now, Tier.MINUTE) != (
            self._minute_start
        )

    def due(self, now: float) -> bool:
        """Whether a minute has closed since the last flush."""
        return self._minute_start is None or self._minute_due(now)

    def flush(self, now: float) -> Flushed:
        """Close the open minute (if it has ended) and say what to write.

        Returns the closed minute's rows, every hour or day bucket that closed, and the open
        hour and day buckets that changed (with their sketch), so a restart can resume them.
        """
        out = Flushed()
        current = bucket_of(now, Tier.MINUTE)
        if self._minute_start is None:
            self._minute_start = current
        if current == self._minute_start:
            return out
        start = self._minute_start
        # Verdict time up to the minute's end, then the minute's rows.
        for target, (verdict, since) in list(self._verdicts.items()):
            self._accrue(target, verdict, since, now)
            self._verdicts[target] = (verdict, max(since, now))
        touched: set[tuple[Tier, str, str]] = set()
        for (target, region), b in self._minute.items():
            out.regions.append(RegionRow(Tier.MINUTE, target, region, start, b, True))
            for tier in _COARSE:
                key = (tier, target, region)
                self._close_coarse(key, bucket_of(start, tier), out)
                held = self._coarse.get(key)
                if held is None:
                    held = self._coarse[key] = (bucket_of(start, tier), RegionBucket())
                held[1].merge(b)
                touched.add(key)
        self._minute = {}
        self._minute_start = current
        # Hours and days that ended with no result in their last minute close here.
        for key in list(self._coarse):
            self._close_coarse(key, bucket_of(start, key[0]), out)
        for key in touched:
            if key in self._coarse:
                bucket, data = self._coarse[key]
                out.regions.append(RegionRow(key[0], key[1], key[2], bucket, data, False))
        # Target buckets: closed ones were emitted by `_accrue`; the open ones now.
        for (tier, target), (bucket, tdata) in list(self._target_open.items()):
            if bucket + tier.value <= now:
                del self._target_open[(tier, target)]
                out.targets.append(TargetRow(tier, target, bucket, tdata, True))
            elif tier is not Tier.MINUTE:
                out.targets.append(TargetRow(tier, target, bucket, tdata, False))
        out.targets.extend(self._closed_targets)
        self._closed_targets = []
        return out

    def _close_coarse(self, key: tuple[Tier, str, str], bucket: int, out: Flushed) -> None:
        held = self._coarse.get(key)
        if held is not None and held[0] != bucket:
            del self._coarse[key]
            out.regions.append(RegionRow(key[0], key[1], key[2], held[0], held[1], True))

    def _accrue(self, target: str, verdict: Verdict, start: float, end: float) -> None:
        """Count [start, end) of `verdict`, split at every tier's bucket edges."""
        if end <= start:
            return
        maintenance = verdict is Verdict.DOWN and self._in_maintenance(target, (start + end) / 2)
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
                held[1].add(verdict, round((edge - t) * 1000), maintenance)
                t = edge
