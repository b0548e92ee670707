"""Queries of the history database: each takes the reader's connection, returns plain values.

Run on `HistoryDB`'s reader thread (`await db.read(partial(fn, ...))`). Every query walks a
primary key or an index range: a page's questions stay under a few milliseconds at 1,000
targets x 3 regions with 90 days of history (see docs/performance.md).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from aggregator.core.incidents import Incident
from aggregator.core.notices import Announcement, Window
from aggregator.core.rollup import Tier
from aggregator.core.uptime import CheckCounts, TimeSplit
from aggregator.edges.historydb import (
    _INCIDENT_COLUMNS,
    _LATENCY_SCALE,
    LatencyRow,
    _incident,
)

MAX_INCIDENTS = 500


def incidents(
    conn: sqlite3.Connection,
    *,
    target: str | None = None,
    since: float | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Incident]:
    """Incidents newest first: of one target or all, overlapping `since` or later."""
    where: list[str] = []
    args: list[object] = []
    if target is not None:
        where.append("target = ?")
        args.append(target)
    if since is not None:
        where.append("(ended_at IS NULL OR ended_at >= ?)")
        args.append(since)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_INCIDENT_COLUMNS} FROM incidents {clause} "  # noqa: S608 - fixed fragments
        "ORDER BY id DESC LIMIT ?",
        (*args, min(max(limit, 1), MAX_INCIDENTS)),
    ).fetchall()
    return [_incident(r) for r in rows]


def incident(conn: sqlite3.Connection, incident_id: int) -> Incident | None:
    """One incident by id."""
    row = conn.execute(
        f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE id = ?",  # noqa: S608
        (incident_id,),
    ).fetchone()
    return None if row is None else _incident(row)


def time_splits(
    conn: sqlite3.Connection, tier: Tier, start: float, end: float, target: str | None = None
) -> dict[str, TimeSplit]:
    """Verdict time per target over the closed buckets of `tier` starting in [start, end).

    Open buckets are the caller's to add, from memory (`Rollups.open_target`).
    """
    if tier is Tier.MINUTE:
        if target is None:
            raise ValueError("minute rows are read one target at a time")
        row = conn.execute(
            "SELECT SUM(up_ms), SUM(degraded_ms), SUM(down_ms), SUM(maint_ms), SUM(unknown_ms) "
            "FROM target_minutes WHERE bucket >= ? AND bucket < ? "
            "AND pair = (SELECT id FROM pairs WHERE target = ? AND region = '')",
            (start, end, target),
        ).fetchone()
        if row is None or row[0] is None:
            return {}
        return {target: TimeSplit(*(int(v or 0) for v in row))}
    extra, args = ("AND p.target = ?", [target]) if target is not None else ("", [])
    rows = conn.execute(
        "SELECT p.target, SUM(t.up_ms), SUM(t.degraded_ms), SUM(t.down_ms), SUM(t.maint_ms), "  # noqa: S608 - fixed fragments
        "SUM(t.unknown_ms) FROM pairs p JOIN target_rollups t ON t.pair = p.id "
        "AND t.tier = ? AND t.bucket >= ? AND t.bucket < ? AND t.open = 0 "
        f"WHERE p.region = '' {extra} GROUP BY p.target",
        (int(tier), start, end, *args),
    )
    return {r[0]: TimeSplit(*(int(v or 0) for v in r[1:])) for r in rows}


def daily_splits(
    conn: sqlite3.Connection, target: str, start: float, end: float
) -> list[tuple[int, TimeSplit]]:
    """One target's verdict time per day in [start, end), oldest first."""
    rows = conn.execute(
        "SELECT t.bucket, t.up_ms, t.degraded_ms, t.down_ms, t.maint_ms, t.unknown_ms "
        "FROM target_rollups t JOIN pairs p ON p.id = t.pair "
        "WHERE p.target = ? AND p.region = '' AND t.tier = ? AND t.bucket >= ? AND t.bucket < ? "
        "AND t.open = 0 ORDER BY t.bucket",
        (target, int(Tier.DAY), start, end),
    )
    return [(int(r[0]), TimeSplit(*(int(v) for v in r[1:]))) for r in rows]


def check_counts(
    conn: sqlite3.Connection, target: str, tier: Tier, start: float, end: float
) -> dict[str, CheckCounts]:
    """Checks per region of one target over the buckets of `tier` starting in [start, end)."""
    rows = conn.execute(
        "SELECT p.region, SUM(r.checks), SUM(r.failures), SUM(r.inconclusive) "
        "FROM pairs p JOIN region_rollups r ON r.pair = p.id "
        "AND r.tier = ? AND r.bucket >= ? AND r.bucket < ? AND r.sketch IS NULL "
        "WHERE p.target = ? AND p.region != '' GROUP BY p.region",
        (int(tier), start, end, target),
    )
    return {r[0]: CheckCounts(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows}


def latency(
    conn: sqlite3.Connection, target: str, tier: Tier, start: float, end: float
) -> list[LatencyRow]:
    """One target's latency per region over the closed buckets in [start, end), oldest first."""
    if tier is Tier.MINUTE:
        sql = (
            "SELECT p.region, r.bucket, r.p50, r.p95, r.max FROM pairs p "
            "JOIN region_minutes r ON r.pair = p.id AND r.bucket >= ? AND r.bucket < ? "
            "WHERE p.target = ? AND p.region != '' ORDER BY p.region, r.bucket"
        )
        args: tuple[object, ...] = (start, end, target)
    else:
        sql = (
            "SELECT p.region, r.bucket, r.p50, r.p95, r.max FROM pairs p "
            "JOIN region_rollups r ON r.pair = p.id AND r.tier = ? AND r.bucket >= ? "
            "AND r.bucket < ? AND r.sketch IS NULL "
            "WHERE p.target = ? AND p.region != '' ORDER BY p.region, r.bucket"
        )
        args = (int(tier), start, end, target)

    def ms(v: int | None) -> float | None:
        return None if v is None else v / _LATENCY_SCALE

    rows = conn.execute(sql, args)
    return [LatencyRow(r[0], int(r[1]), ms(r[2]), ms(r[3]), ms(r[4])) for r in rows]


def deploys(
    conn: sqlite3.Connection, target: str, start: float, end: float
) -> list[tuple[str, float, str]]:
    """Version changes of one target in [start, end): (region, at, version), oldest first."""
    rows = conn.execute(
        "SELECT p.region, d.at, d.version FROM pairs p JOIN deploys d ON d.pair = p.id "
        "AND d.at >= ? AND d.at < ? WHERE p.target = ? ORDER BY d.at",
        (start, end, target),
    )
    return [(r[0], float(r[1]), r[2]) for r in rows]


def announcement(conn: sqlite3.Connection) -> Announcement | None:
    """The banner in force, if any."""
    row = conn.execute(
        "SELECT text, at FROM announcements WHERE cleared_at IS NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else Announcement(row[0], float(row[1]))


def windows(conn: sqlite3.Connection, ending_after: float) -> list[Window]:
    """Maintenance windows that end after `ending_after`, soonest start first."""
    rows = conn.execute(
        "SELECT id, target, starts_at, ends_at, reason, silences, errors, created_at "
        "FROM maintenance WHERE ends_at > ? ORDER BY starts_at, id",
        (ending_after,),
    )
    return [_window(r) for r in rows]


def _window(r: Sequence[object]) -> Window:
    return Window(
        id=int(str(r[0])),
        target=str(r[1]),
        starts_at=float(str(r[2])),
        ends_at=float(str(r[3])),
        reason=str(r[4]),
        silences=json.loads(str(r[5])),
        errors=json.loads(str(r[6])),
        created_at=float(str(r[7])),
    )


def targets(conn: sqlite3.Connection) -> list[str]:
    """Every target with history."""
    return [r[0] for r in conn.execute("SELECT target FROM pairs WHERE region = '' ORDER BY 1")]
