"""Retention on a real SQLite file: each tier's rows go when older than its retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aggregator.config import StorageConfig
from aggregator.core.rollup import RegionBucket, RegionRow, Sketch, TargetBucket, TargetRow, Tier
from aggregator.edges.historydb import HistoryDB, Retention
from tests.rulekit import Clock

DAY = 86_400
HOUR = 3_600
# Two hours into a UTC day.
NOW = 1_789_948_800 + 2 * HOUR
DEFAULTS = StorageConfig().retention
HOUR_CUTOFF = NOW - 90 * DAY
DAY_CUTOFF = NOW - 2 * 365 * DAY
MINUTE_CUTOFF = NOW - 48 * HOUR

# (tier, bucket, kept): buckets either side of each tier's cutoff. A bucket is kept while any
# of it is younger than the cutoff (it starts at or after the cutoff, for aligned cutoffs).
ROWS = [
    (Tier.HOUR, HOUR_CUTOFF - 30 * DAY, False),
    (Tier.HOUR, HOUR_CUTOFF - HOUR, False),  # ends exactly at the cutoff
    (Tier.HOUR, HOUR_CUTOFF, True),
    (Tier.HOUR, HOUR_CUTOFF + HOUR, True),
    (Tier.HOUR, NOW - HOUR, True),
    # Days outlive hours: a day as old as a pruned hour stays.
    (Tier.DAY, HOUR_CUTOFF - 30 * DAY - 2 * HOUR, True),
    (Tier.DAY, DAY_CUTOFF - 2 * HOUR - 30 * DAY, False),
    (Tier.DAY, DAY_CUTOFF - 2 * HOUR - DAY, False),  # the whole day before the cutoff's
    (Tier.DAY, DAY_CUTOFF - 2 * HOUR + DAY, True),  # the whole day after
    (Tier.DAY, NOW - 2 * HOUR, True),  # today, checkpointed open
    (Tier.MINUTE, MINUTE_CUTOFF - 60, False),
    (Tier.MINUTE, MINUTE_CUTOFF, True),
]


def region_row(tier: Tier, bucket: int) -> RegionRow:
    sketch = Sketch()
    sketch.add(12.0)
    return RegionRow(tier, "api", "us-east", bucket, RegionBucket(1, 0, 0, 12.0, sketch), True)


def target_row(tier: Tier, bucket: int) -> TargetRow:
    return TargetRow(tier, "api", bucket, TargetBucket(up_ms=60_000), True)


def buckets(path: Path, table: str, tier: Tier) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        if table.endswith("_minutes"):
            rows = conn.execute(f"SELECT bucket FROM {table} ORDER BY bucket").fetchall()  # noqa: S608
        else:
            rows = conn.execute(
                f"SELECT bucket FROM {table} WHERE tier = ? ORDER BY bucket",  # noqa: S608
                (int(tier),),
            ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def test_the_default_retention_is_48_hours_90_days_and_2_years() -> None:
    """The configured defaults: minutes 48 h, hours 90 days, days 2 years."""
    assert (DEFAULTS.minute, DEFAULTS.hour, DEFAULTS.day) == (48 * HOUR, 90 * DAY, 730 * DAY)


def test_rows_older_than_their_tiers_retention_are_pruned_younger_kept(tmp_path: Path) -> None:
    """Hour rows older than 90 days and day rows older than 2 years go; younger rows stay."""
    path = tmp_path / "h.sqlite"
    db = HistoryDB(
        path,
        Retention(DEFAULTS.minute, DEFAULTS.hour, DEFAULTS.day, DEFAULTS.events),
        clock=Clock(float(NOW)),
    )
    db.open()
    # One write: the writer prunes after it (the first since opening), rows already in.
    db.write_rollups(
        [region_row(tier, bucket) for tier, bucket, _ in ROWS],
        [target_row(tier, bucket) for tier, bucket, _ in ROWS],
    )
    assert db.flush(10)
    assert db.write_errors == 0
    try:
        for tier in (Tier.MINUTE, Tier.HOUR, Tier.DAY):
            kept = sorted(b for t, b, keep in ROWS if t is tier and keep)
            tables = (
                ("region_minutes", "target_minutes")
                if tier is Tier.MINUTE
                else ("region_rollups", "target_rollups")
            )
            for table in tables:
                assert buckets(path, table, tier) == kept, (table, tier.label)
    finally:
        db.close()
