"""The history database's edges, on a real SQLite file.

Rows written twice, a failing write, a clock stepped ahead, a note racing a close, a clean
stop, an orphaned incident.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from aggregator.config import StorageConfig
from aggregator.core.incidents import Incident, RegionInvolvement
from aggregator.core.rollup import RegionBucket, RegionRow, Sketch, TargetBucket, TargetRow, Tier
from aggregator.edges import historydb
from aggregator.edges.historydb import HistoryDB
from aggregator.recorder import History
from tests.rulekit import Clock, RegionProbe
from wire.state import Verdict

DAY = 1_789_948_800.0


def region(checks: int, *, final: bool, bucket: int = int(DAY), ms: float = 10.0) -> RegionRow:
    sketch = Sketch()
    for _ in range(checks):
        sketch.add(ms)
    data = RegionBucket(checks, 0, 0, ms, sketch)
    return RegionRow(Tier.HOUR, "api", "us-east", bucket, data, final)


def target(up_ms: int, *, final: bool, tier: Tier = Tier.DAY) -> TargetRow:
    return TargetRow(tier, "api", int(DAY), TargetBucket(up_ms=up_ms), final)


def opened(path: Path, clock: Clock | None = None) -> HistoryDB:
    db = HistoryDB(path, clock=clock or Clock(DAY + 7200))
    db.open()
    return db


def one(db: HistoryDB, sql: str) -> tuple[object, ...]:
    assert db.flush(10)
    conn = sqlite3.connect(db.path)
    try:
        row = conn.execute(sql).fetchone()
    finally:
        conn.close()
    assert row is not None
    return tuple(row)


def test_a_bucket_closed_twice_adds_up_and_a_checkpoint_never_erases_a_closed_row(
    tmp_path: Path,
) -> None:
    """Forgotten and back within the day: the day's two closed rows add, nothing is erased."""
    db = opened(tmp_path / "h.sqlite")
    db.write_rollups([region(4, final=True)], [target(3_600_000, final=True)])
    # Back the same day: a checkpoint of the new open bucket must not replace the closed row.
    db.write_rollups([region(1, final=False)], [target(60_000, final=False)])
    assert one(db, "SELECT checks, sketch IS NULL FROM region_rollups") == (4, 1)
    assert one(db, "SELECT up_ms, open FROM target_rollups") == (3_600_000, 0)
    # It closes: added to the first.
    db.write_rollups([region(2, final=True)], [target(120_000, final=True)])
    assert one(db, "SELECT checks FROM region_rollups") == (6,)
    assert one(db, "SELECT up_ms, open FROM target_rollups") == (3_720_000, 0)
    # Open over open replaces (each checkpoint holds everything so far).
    db.write_rollups([], [replace(target(1, final=False), bucket=int(DAY) + 86400)])
    db.write_rollups([], [replace(target(2, final=False), bucket=int(DAY) + 86400)])
    assert one(db, "SELECT up_ms FROM target_rollups ORDER BY bucket DESC LIMIT 1") == (2,)
    db.close()


def test_a_failing_write_neither_kills_the_writer_nor_skews_the_pending_count(
    tmp_path: Path,
) -> None:
    db = opened(tmp_path / "h.sqlite")
    failed: list[str] = []
    db._on_write_error = failed.append

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES(1)")

    def buggy(_conn: sqlite3.Connection) -> None:
        raise ValueError("a bug, not SQLite")

    for _ in range(3):
        db.write_rollups([region(1, final=True)], [])
    db._submit("broken", broken, 5)
    db._submit("buggy", buggy, 2)
    db.write_rollups([region(1, final=True)], [])
    assert db.flush(10)
    assert db.pending == 0
    assert failed == ["broken", "buggy"]
    assert one(db, "SELECT checks FROM region_rollups") == (4,)  # the good ones all landed
    db.close()


def test_a_clock_stepped_years_ahead_prunes_nothing(tmp_path: Path) -> None:
    clock = Clock(DAY + 7200)
    db = opened(tmp_path / "h.sqlite", clock)
    incident = Incident(1, "api", DAY, Verdict.DOWN, ended_at=DAY + 60)
    db.write_incidents([incident])
    db.write_rollups([region(1, final=True)], [])
    assert db.flush(10)
    clock.now += 3 * 365 * 86400  # a moment's wrong clock
    db.write_rollups([], [target(1, final=True)])  # a write, so the writer considers a prune
    assert one(db, "SELECT COUNT(*) FROM incidents") == (1,)
    assert one(db, "SELECT COUNT(*) FROM region_rollups") == (1,)
    db.close()


def test_a_note_never_reopens_an_incident_closed_meanwhile(tmp_path: Path) -> None:
    clock = Clock(DAY)
    history = History.open(StorageConfig(path=tmp_path / "h.sqlite"), clock=clock)
    incident = Incident(
        7, "api", DAY, Verdict.DOWN, regions={"us-east": RegionInvolvement(DAY, "x")}
    )
    stale = replace(incident)  # what a reader fetched while it was open
    history.db.write_incidents([incident])
    history.db.write_incidents([replace(incident, ended_at=DAY + 300)])  # the close, queued
    history.note(stale, "rolled back")
    assert one(history.db, "SELECT ended_at, note FROM incidents WHERE id = 7") == (
        DAY + 300,
        "rolled back",
    )
    history.close()


def test_a_clean_stop_keeps_the_open_minute(tmp_path: Path) -> None:
    clock = Clock(DAY)
    path = tmp_path / "h.sqlite"
    history = History.open(StorageConfig(path=path), clock=clock)
    probe = RegionProbe("us-east")
    for_ticks = list(history.tick_slices(clock.now))  # the first minute opens
    assert for_ticks == []
    history.rollups.verdict("api", Verdict.DOWN, DAY + 5)
    for k in range(5):
        clock.now = DAY + 5 + k
        history.observe(probe.check(False, clock.now), clock.now)
    history.close()  # 00:00:09: the minute has not ended
    db = opened(path, clock)
    assert one(db, "SELECT bucket, checks, failures FROM region_minutes") == (int(DAY), 5, 5)
    # The verdict time of the minute so far too (4 s down), not only the hour's.
    assert one(db, "SELECT bucket, down_ms FROM target_minutes") == (int(DAY), 4000)
    assert one(db, "SELECT checks FROM region_rollups WHERE tier = 3600") == (5,)
    db.close()


def test_an_orphaned_open_incident_closes_once_its_target_stays_unknown(tmp_path: Path) -> None:
    """Its close was lost (a dropped write); the engine no longer knows the target."""
    clock = Clock(DAY)
    path = tmp_path / "h.sqlite"
    db = opened(path, clock)
    db.write_incidents([Incident(3, "legacy", DAY - 600, Verdict.DOWN)])
    db.close()
    history = History.open(StorageConfig(path=path), clock=clock, forget_after=3600)
    history.loaded([], clock.now)
    clock.now += 1800
    list(history.tick_slices(clock.now))
    assert history.incidents.open_for("legacy") is not None  # not yet: it may come back
    clock.now += 1801
    list(history.tick_slices(clock.now))
    assert history.incidents.open_for("legacy") is None
    assert one(history.db, "SELECT ended_at FROM incidents WHERE id = 3") == (DAY,)
    history.close()


def test_a_clock_that_booted_behind_is_trusted_once_it_stays_corrected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP moves a clock that booted in 2000 forward: retention applies again, not never."""
    monkeypatch.setattr(historydb, "TRUST_AHEAD_S", 0.0)
    clock = Clock(946_684_800.0)  # 2000-01-01: no real-time clock yet
    db = opened(tmp_path / "h.sqlite", clock)
    db.write_rollups([replace(region(1, final=True), tier=Tier.MINUTE)], [])  # DAY's minute
    assert db.flush(10)
    clock.now = DAY + 20 * 86400  # corrected: now, 20 days after that row
    for _ in range(3):  # each write lets the writer consider a prune
        db.write_rollups([], [target(1, final=True)])
        assert db.flush(10)
    assert one(db, "SELECT COUNT(*) FROM region_minutes") == (0,)
    db.close()


def test_a_window_whose_silence_would_not_expire_can_be_ended_again(tmp_path: Path) -> None:
    clock = Clock(DAY)
    history = History.open(StorageConfig(path=tmp_path / "h.sqlite"), clock=clock)
    silences: dict[str, str | None] = {"http://am-a": "s-1", "http://am-b": "s-2"}
    window = history.add_window("api", DAY, DAY + 3600, "upgrade", silences, {})
    clock.now += 60
    ended = history.end_window(window.id, {"http://am-b": "timeout"})
    assert ended is not None
    assert ended.ends_at == DAY + 60
    assert ended.silences == {"http://am-b": "s-2"}  # only the one still to expire
    assert ended.errors == {"http://am-b": "timeout"}  # the expiry's, not the creation's
    assert history.window(window.id) is not None  # so it can be retried
    again = history.end_window(window.id, {})
    assert again is not None
    assert again.silences == {}
    assert again.ends_at == DAY + 60
    assert history.window(window.id) is None
    history.close()


def test_a_flush_abandoned_half_way_is_finished_not_lost(tmp_path: Path) -> None:
    """A stop (or an error) between two slices of a minute's flush loses none of it."""
    clock = Clock(DAY)
    path = tmp_path / "h.sqlite"
    history = History.open(StorageConfig(path=path), clock=clock)
    list(history.tick_slices(clock.now))
    probes = [RegionProbe("us-east", target=f"t{i}") for i in range(1200)]
    clock.now = DAY + 10
    for p in probes:
        history.observe(p.check(True, clock.now), clock.now)
    clock.now = DAY + 61
    ticking = cast(Generator[None, None, None], history.tick_slices(clock.now))
    next(ticking)  # one slice, then the task is cancelled
    ticking.close()
    history.close()
    db = opened(path, clock)
    assert one(db, "SELECT COUNT(*), SUM(checks) FROM region_minutes") == (1200, 1200)
    db.close()


def test_an_incident_closed_after_a_restart_keeps_the_versions_it_knew(tmp_path: Path) -> None:
    """An open incident taken back from the file and closed as an orphan ends at its versions."""
    clock = Clock(DAY)
    path = tmp_path / "h.sqlite"
    db = opened(path, clock)
    versions = {"us-east": "3.8.34", "eu-west": "3.8.34"}
    db.write_incidents([Incident(3, "legacy", DAY - 600, Verdict.DOWN, versions_start=versions)])
    db.close()
    history = History.open(StorageConfig(path=path), clock=clock, forget_after=60)
    history.loaded([], clock.now)
    clock.now += 61
    list(history.tick_slices(clock.now))
    assert history.incidents.open_for("legacy") is None
    (stored,) = one(history.db, "SELECT versions_end FROM incidents WHERE id = 3")
    assert json.loads(cast(str, stored)) == versions
    history.close()
