"""Availability, error budget and burn rate from rolled-up time and checks. Pure arithmetic.

A target's availability is the share of its *judged* time that it was reachable: up or
degraded (a regional problem, the service still answering from a quorum) over up, degraded
and down. Unknown time (no fresh evidence: probes silent, the aggregator starting) and time
with no rows at all (the aggregator not running) are gaps, left out on both sides, so the
prober's own outages never count as the service's downtime. Down time inside a maintenance
window is left out too, unless `count_maintenance` is set.

A region's availability is its successful checks over its conclusive ones (inconclusive
checks are the probe's own failures).
"""

from __future__ import annotations

from dataclasses import dataclass

# The runbook's paging thresholds: 6x the budget's burn for 5 minutes is SEV-1, 2x for an hour
# is SEV-2 (the multiwindow burn-rate alerts of the SRE workbook).
BURN_SEV1 = 6.0
BURN_SEV2 = 2.0


@dataclass(frozen=True)
class TimeSplit:
    """How long a target's verdict had each value, in ms."""

    up_ms: int = 0
    degraded_ms: int = 0
    down_ms: int = 0
    maint_ms: int = 0
    unknown_ms: int = 0

    def __add__(self, other: TimeSplit) -> TimeSplit:
        return TimeSplit(
            self.up_ms + other.up_ms,
            self.degraded_ms + other.degraded_ms,
            self.down_ms + other.down_ms,
            self.maint_ms + other.maint_ms,
            self.unknown_ms + other.unknown_ms,
        )

    def availability(self, count_maintenance: bool = False) -> float | None:
        """Reachable share of the judged time; None when nothing was judged."""
        down = self.down_ms + (self.maint_ms if count_maintenance else 0)
        good = self.up_ms + self.degraded_ms
        judged = good + down
        return good / judged if judged else None

    def judged_ms(self, count_maintenance: bool = False) -> int:
        """The time that counts in the arithmetic."""
        extra = self.maint_ms if count_maintenance else 0
        return self.up_ms + self.degraded_ms + self.down_ms + extra


@dataclass(frozen=True)
class CheckCounts:
    """One region's checks over a window."""

    checks: int = 0
    failures: int = 0
    inconclusive: int = 0

    def __add__(self, other: CheckCounts) -> CheckCounts:
        return CheckCounts(
            self.checks + other.checks,
            self.failures + other.failures,
            self.inconclusive + other.inconclusive,
        )

    def availability(self) -> float | None:
        """Successful share of the conclusive checks; None when there were none."""
        conclusive = self.checks - self.inconclusive
        return (conclusive - self.failures) / conclusive if conclusive > 0 else None


def budget_left(availability: float | None, slo: float) -> float | None:
    """The share of the error budget not yet spent (negative when overspent)."""
    if availability is None:
        return None
    return 1.0 - (1.0 - availability) / (1.0 - slo)


def burn_rate(availability: float | None, slo: float) -> float | None:
    """How fast the budget burns: 1.0 spends exactly the budget over the SLO window."""
    if availability is None:
        return None
    return (1.0 - availability) / (1.0 - slo)


def severity(burn_5m: float | None, burn_1h: float | None) -> str | None:
    """The runbook's SEV level for these burn rates, or None."""
    if burn_5m is not None and burn_5m >= BURN_SEV1:
        return "SEV-1"
    if burn_1h is not None and burn_1h >= BURN_SEV2:
        return "SEV-2"
    return None
