"""The history API's answers, built from the database on its reader thread.

Each `*_view` runs its queries in one call on `HistoryDB`'s reader thread (never on the
event loop) and builds the response models of `present/historyviews.py`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from aggregator.config import SloConfig
from aggregator.core.rollup import RegionBucket, Rollups, TargetBucket, Tier, bucket_of
from aggregator.core.uptime import (
    BURN_SEV1,
    BURN_SEV2,
    CheckCounts,
    TimeSplit,
    budget_left,
    burn_rate,
    severity,
)
from aggregator.edges import historyread as q
from aggregator.edges.historydb import HistoryDB
from aggregator.present.historyviews import (
    BAR_DAYS,
    WINDOWS,
    DayUptime,
    DeployMarker,
    IncidentsResponse,
    LatencyPoint,
    LatencyResponse,
    TargetUptime,
    UptimeListResponse,
    UptimeResponse,
    incident_doc,
    uptime_window,
    window_range,
)


async def incidents_view(
    db: HistoryDB,
    now: float,
    *,
    target: str | None = None,
    since: float | None = None,
    before: int | None = None,
    limit: int = 100,
) -> IncidentsResponse:
    """Incidents newest first, a page at a time."""
    found = await db.read(
        partial(q.incidents, target=target, since=since, before_id=before, limit=limit + 1)
    )
    more = len(found) > limit
    found = found[:limit]
    return IncidentsResponse(
        incidents=[incident_doc(i, now) for i in found],
        next_before=found[-1].id if more and found else None,
    )


@dataclass(frozen=True)
class OpenBuckets:
    """Copies of the buckets still open in memory (the database holds only closed ones)."""

    target: Mapping[Tier, tuple[int, TargetBucket]]
    regions: Mapping[tuple[Tier, str], tuple[int, RegionBucket]]

    @classmethod
    def of(cls, rollups: Rollups | None, target: str, regions: Iterable[str]) -> OpenBuckets:
        """Taken on the event loop, before the query runs on the reader thread."""
        if rollups is None:
            return cls({}, {})
        return cls(rollups.open_target(target), rollups.open_regions(target, regions))

    def time(self, tier: Tier, start: float, end: float) -> TimeSplit:
        """The open verdict time of `tier` in [start, end)."""
        held = self.target.get(tier)
        if held is None or not start <= held[0] < end:
            return TimeSplit()
        return _split(held[1])

    def checks(self, tier: Tier, start: float, end: float) -> dict[str, CheckCounts]:
        """The open checks of `tier` in [start, end), per region."""
        return {
            region: CheckCounts(b.checks, b.failures, b.inconclusive)
            for (t, region), (bucket, b) in self.regions.items()
            if t is tier and start <= bucket < end
        }


def _split(b: TargetBucket) -> TimeSplit:
    return TimeSplit(b.up_ms, b.degraded_ms, b.down_ms, b.maint_ms, b.unknown_ms)


def _merge_counts(*parts: Mapping[str, CheckCounts]) -> dict[str, CheckCounts]:
    out: dict[str, CheckCounts] = {}
    for part in parts:
        for region, c in part.items():
            out[region] = out.get(region, CheckCounts()) + c
    return out


def _uptime(
    conn: sqlite3.Connection, target: str, now: float, slo: SloConfig, opened: OpenBuckets
) -> UptimeResponse:
    count = slo.count_maintenance
    windows = []
    for name in WINDOWS:
        tier, start, end = window_range(name, now)
        split = q.time_splits(conn, tier, start, end, target).get(target, TimeSplit())
        split = split + opened.time(tier, start, end)
        counts = _merge_counts(
            q.check_counts(conn, target, tier, start, end), opened.checks(tier, start, end)
        )
        windows.append(uptime_window(name, start, end, split, counts, count))
    minute = bucket_of(now, Tier.MINUTE)

    def closed_minutes(n: int) -> float | None:
        split = q.time_splits(conn, Tier.MINUTE, minute - n * 60, minute, target)
        return split.get(target, TimeSplit()).availability(count)

    days = int(slo.window) // 86400  # whole days, checked at config load
    today = bucket_of(now, Tier.DAY)
    slo_start = today - (days - 1) * 86400
    slo_split = q.time_splits(conn, Tier.DAY, slo_start, today + 86400, target)
    slo_total = slo_split.get(target, TimeSplit()) + opened.time(Tier.DAY, slo_start, today + 1)
    slo_availability = slo_total.availability(count)
    bar_start = today - (BAR_DAYS - 1) * 86400
    by_day = dict(q.daily_splits(conn, target, bar_start, today + 86400))
    held = opened.target.get(Tier.DAY)
    if held is not None and bar_start <= held[0] <= today:
        by_day[held[0]] = by_day.get(held[0], TimeSplit()) + _split(held[1])
    daily = [
        DayUptime(
            day=float(day),
            availability=by_day[day].availability(count) if day in by_day else None,
        )
        for day in range(bar_start, today + 86400, 86400)
    ]
    burn_5m = burn_rate(closed_minutes(5), slo.target)
    burn_1h = burn_rate(closed_minutes(60), slo.target)
    return UptimeResponse(
        target=target,
        slo=slo.target,
        slo_window_s=days * 86400.0,
        availability_slo_window=slo_availability,
        budget_left=budget_left(slo_availability, slo.target),
        burn_rate_5m=burn_5m,
        burn_rate_1h=burn_1h,
        burn_thresholds={"sev1_5m": BURN_SEV1, "sev2_1h": BURN_SEV2},
        severity=severity(burn_5m, burn_1h),
        windows=windows,
        daily=daily,
    )


async def uptime_view(
    db: HistoryDB, target: str, now: float, slo: SloConfig, opened: OpenBuckets
) -> UptimeResponse:
    """A target's availability over every window, its budget and burn rates."""
    return await db.read(partial(_uptime, target=target, now=now, slo=slo, opened=opened))


def _uptime_list(
    conn: sqlite3.Connection,
    now: float,
    slo: SloConfig,
    hours: Mapping[str, tuple[int, TargetBucket]],
    days: Mapping[str, tuple[int, TargetBucket]],
) -> UptimeListResponse:
    _, s24, e24 = window_range("24h", now)
    _, s30, e30 = window_range("30d", now)
    day = q.time_splits(conn, Tier.HOUR, s24, e24)
    month = q.time_splits(conn, Tier.DAY, s30, e30)
    for totals, held, start, end in ((day, hours, s24, e24), (month, days, s30, e30)):
        for target, (bucket, b) in held.items():
            if start <= bucket < end:
                totals[target] = totals.get(target, TimeSplit()) + _split(b)
    count = slo.count_maintenance
    return UptimeListResponse(
        targets=[
            TargetUptime(
                target=t,
                availability_24h=day[t].availability(count) if t in day else None,
                availability_30d=month[t].availability(count) if t in month else None,
            )
            for t in sorted(set(day) | set(month))
        ]
    )


async def uptime_list_view(
    db: HistoryDB, now: float, slo: SloConfig, rollups: Rollups | None
) -> UptimeListResponse:
    """Every target's 24 h and 30 d availability."""
    hours = rollups.open_targets(Tier.HOUR) if rollups is not None else {}
    days = rollups.open_targets(Tier.DAY) if rollups is not None else {}
    return await db.read(partial(_uptime_list, now=now, slo=slo, hours=hours, days=days))


def _latency(
    conn: sqlite3.Connection,
    target: str,
    start: float,
    end: float,
    tier: Tier,
    budgets: list[float],
    opened: OpenBuckets,
) -> LatencyResponse:
    regions: dict[str, list[LatencyPoint]] = {}
    for row in q.latency(conn, target, tier, start, end):
        regions.setdefault(row.region, []).append(
            LatencyPoint(bucket=row.bucket, p50_ms=row.p50, p95_ms=row.p95, max_ms=row.max)
        )
    for (t, region), (bucket, b) in sorted(opened.regions.items()):
        if t is tier and start <= bucket < end:
            has = b.sketch.n > 0
            regions.setdefault(region, []).append(
                LatencyPoint(
                    bucket=bucket,
                    p50_ms=b.sketch.quantile(0.5),
                    p95_ms=b.sketch.quantile(0.95),
                    max_ms=b.max_ms if has else None,
                )
            )
    return LatencyResponse(
        target=target,
        start=start,
        end=end,
        tier=tier.label,
        budgets_ms=budgets,
        regions=regions,
        deploys=[
            DeployMarker(region=r, at=at, version=v)
            for r, at, v in q.deploys(conn, target, start, end)
        ],
    )


async def latency_view(
    db: HistoryDB,
    target: str,
    now: float,
    hours: float,
    budgets: list[float],
    opened: OpenBuckets,
) -> LatencyResponse:
    """A target's p50/p95 per region over the last `hours`: minute rows up to 1 h, else hourly.

    Minute rows are keyed time first (cheap to write), so a long minute range would read
    every target's rows: beyond an hour the chart is hourly.
    """
    tier = Tier.MINUTE if hours <= 1 else Tier.HOUR
    end = float(bucket_of(now, tier) + tier.value)
    start = float(bucket_of(now - hours * 3600, tier))
    return await db.read(
        partial(
            _latency,
            target=target,
            start=start,
            end=end,
            tier=tier,
            budgets=budgets,
            opened=opened,
        )
    )
