"""Each (target, region)'s compact counters and its last results, in a ring. Pure.

Kept compact on purpose: there are targets x regions of them. The metrics collector reads the
counters at scrape time; the views read the ring for the status page's history bars.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field

from wire.result import ErrorKind, ProbeResult

# Resolve the service's 5, 20 and 50 ms latency budgets, then the slow tail up to timeouts.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# Outcome codes for the compact history ring: 0 is ok, then each error kind.
# The probe failed, not the target: see ProbeResult.inconclusive.
INCONCLUSIVE = "inconclusive"
OUTCOMES = ("ok", *(k.value for k in ErrorKind), INCONCLUSIVE)


class Recent:
    """The last few results of one (target, region), in flat arrays: a ring of `size`.

    Kept compact on purpose (about 16 bytes a result): there are targets x regions of them.
    """

    __slots__ = ("_codes", "_durations", "_next", "_outcomes", "_starts", "count")

    def __init__(self, size: int) -> None:
        self._starts = array("d", bytes(8 * size))
        self._durations = array("f", bytes(4 * size))
        self._codes = array("H", bytes(2 * size))
        self._outcomes = bytearray(size)
        self._next = 0
        self.count = 0

    def add(self, started_at: float, duration_ms: float, status: int | None, outcome: int) -> None:
        """Record one result, overwriting the oldest when full."""
        size = len(self._outcomes)
        if size == 0:
            return
        i = self._next
        self._starts[i], self._durations[i] = started_at, duration_ms
        self._codes[i], self._outcomes[i] = status or 0, outcome
        self._next = (i + 1) % size
        self.count = min(self.count + 1, size)

    def items(self) -> list[tuple[float, float, int | None, str]]:
        """Oldest first: (started_at, duration_ms, status_code, outcome)."""
        size = len(self._outcomes)
        first = (self._next - self.count) % size if size else 0
        out = []
        for k in range(self.count):
            i = (first + k) % size
            code = self._codes[i]
            out.append(
                (
                    self._starts[i],
                    float(self._durations[i]),
                    code or None,
                    OUTCOMES[self._outcomes[i]],
                )
            )
        return out


@dataclass(slots=True)
class Series:
    """Counts of one (target, region): latency histogram, results by outcome, recent results."""

    recent: Recent
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


class SeriesStore:
    """Per (target, region) counters and recent results, updated once per applied result."""

    def __init__(self, history: int = 20) -> None:
        self.history = history
        self.series: dict[str, dict[str, Series]] = {}

    def observe(self, r: ProbeResult) -> None:
        """Count one applied result."""
        by_region = self.series.get(r.target)
        if by_region is None:
            by_region = self.series[r.target] = {}
        s = by_region.get(r.region)
        if s is None:
            s = by_region[r.region] = Series(Recent(self.history))
        seconds = r.duration_ms / 1000.0
        s.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        s.latency_sum += seconds
        if r.inconclusive:
            outcome = INCONCLUSIVE
        else:
            outcome = "ok" if r.ok else (r.error_kind.value if r.error_kind else "internal")
        s.outcomes[outcome] = s.outcomes.get(outcome, 0) + 1
        s.recent.add(r.started_at, r.duration_ms, r.status_code, OUTCOMES.index(outcome))

    def recent(self, target: str, region: str) -> list[tuple[float, float, int | None, str]]:
        """A pair's recent results, oldest first."""
        s = self.series.get(target, {}).get(region)
        return s.recent.items() if s is not None else []

    def forget(self, target: str) -> None:
        """Drop a target's series."""
        self.series.pop(target, None)
