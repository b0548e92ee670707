"""The history API's answers, built from the database on its reader thread.

Each `*_view` runs its queries in one call on `HistoryDB`'s reader thread (never on the
event loop) and builds the response models of `present/historyviews.py`.
"""

from __future__ import annotations

import sqlite3
from functools import partial

from aggregator.config import SloConfig
from aggregator.core.rollup import Tier, bucket_of
from aggregator.core.uptime import BURN_SEV1, BURN_SEV2, TimeSplit, budget_left, burn_rate, severity
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


def _uptime(
    conn: sqlite3.Connection, target: str, now: float, slo: SloConfig
) -> UptimeResponse:  # fmt: skip
    count = slo.count_maintenance
    windows = []
    for name in WINDOWS:
        tier, start, end = window_range(name, now)
        split = q.time_splits(conn, tier, start, end, target).get(target, TimeSplit())
        counts = q.check_counts(conn, target, tier, start, end)
        windows.append(uptime_window(name, start, end, split, counts, count))
    minute = bucket_of(now, Tier.MINUTE)

    def closed_minutes(n: int) -> float | None:
        split = q.time_splits(conn, Tier.MINUTE, minute - n * 60, minute, target)
        return split.get(target, TimeSplit()).availability(count)

    days = max(1, round(slo.window / 86400))
    today = bucket_of(now, Tier.DAY)
    slo_start = today - (days - 1) * 86400
    slo_split = q.time_splits(conn, Tier.DAY, slo_start, today + 86400, target)
    slo_availability = slo_split.get(target, TimeSplit()).availability(count)
    bar_start = today - (BAR_DAYS - 1) * 86400
    by_day = dict(q.daily_splits(conn, target, bar_start, today + 86400))
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


async def uptime_view(db: HistoryDB, target: str, now: float, slo: SloConfig) -> UptimeResponse:
    """A target's availability over every window, its budget and burn rates."""
    return await db.read(partial(_uptime, target=target, now=now, slo=slo))


def _uptime_list(conn: sqlite3.Connection, now: float, slo: SloConfig) -> UptimeListResponse:
    _, s24, e24 = window_range("24h", now)
    _, s30, e30 = window_range("30d", now)
    day = q.time_splits(conn, Tier.HOUR, s24, e24)
    month = q.time_splits(conn, Tier.DAY, s30, e30)
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


async def uptime_list_view(db: HistoryDB, now: float, slo: SloConfig) -> UptimeListResponse:
    """Every target's 24 h and 30 d availability."""
    return await db.read(partial(_uptime_list, now=now, slo=slo))


def _latency(
    conn: sqlite3.Connection, target: str, start: float, end: float, tier: Tier,
    budgets: list[float],
) -> LatencyResponse:  # fmt: skip
    regions: dict[str, list[LatencyPoint]] = {}
    for row in q.latency(conn, target, tier, start, end):
        regions.setdefault(row.region, []).append(
            LatencyPoint(bucket=row.bucket, p50_ms=row.p50, p95_ms=row.p95, max_ms=row.max)
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
    db: HistoryDB, target: str, now: float, hours: float, budgets: list[float]
) -> LatencyResponse:
    """A target's p50/p95 per region over the last `hours`: minute rows up to 6 h, else hourly."""
    tier = Tier.MINUTE if hours <= 6 else Tier.HOUR
    end = float(bucket_of(now, tier) + tier.value)
    start = float(bucket_of(now - hours * 3600, tier))
    return await db.read(
        partial(_latency, target=target, start=start, end=end, tier=tier, budgets=budgets)
    )
