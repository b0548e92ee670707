"""The history database: SQLite, one file, WAL; rollups, incidents, deploys, notes, banners.

Writes go through one writer thread fed by a queue: the event loop only queues (a bounded
queue: past `max_pending` writes, new ones are dropped and counted, never awaited). Reads run
on one reader thread with its own connection (WAL lets them proceed during a write). Verdicts
never come from here: losing the file loses history, not pages.

The schema is versioned in `MIGRATIONS`; `open_history` applies the missing ones at start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aggregator.core.incidents import Incident, RegionInvolvement
from aggregator.core.notices import Announcement, Window
from aggregator.core.rollup import (
    RegionBucket,
    RegionRow,
    Sketch,
    TargetBucket,
    TargetRow,
    Tier,
)
from runtime.errors import ConfigError
from wire.state import Verdict

log = logging.getLogger("vigil.aggregator.history")

T = TypeVar("T")

# Latencies are stored in hundredths of a millisecond: small integers, compact in SQLite.
_LATENCY_SCALE = 100

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE pairs(
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        region TEXT NOT NULL,   -- '' for the target's own (verdict) rows
        UNIQUE(target, region)
    );
    -- Minute rows are keyed time first: each minute's rows are appended together, a few
    -- pages, instead of touching one page per (target, region) (the WAL would take
    -- ~45 MB a minute at 1,000 x 3), and expiry is a range at the head.
    -- (No semicolons in these comments: the script is split on them.)
    CREATE TABLE region_minutes(
        bucket INTEGER NOT NULL, pair INTEGER NOT NULL,
        checks INTEGER NOT NULL, failures INTEGER NOT NULL, inconclusive INTEGER NOT NULL,
        p50 INTEGER, p95 INTEGER, max INTEGER,
        PRIMARY KEY(bucket, pair)
    ) WITHOUT ROWID;
    CREATE TABLE target_minutes(
        bucket INTEGER NOT NULL, pair INTEGER NOT NULL,
        up_ms INTEGER NOT NULL, degraded_ms INTEGER NOT NULL, down_ms INTEGER NOT NULL,
        maint_ms INTEGER NOT NULL, unknown_ms INTEGER NOT NULL,
        PRIMARY KEY(bucket, pair)
    ) WITHOUT ROWID;
    -- Hour and day rows, keyed by (target, region) first: a target's history is one range.
    CREATE TABLE region_rollups(
        pair INTEGER NOT NULL, tier INTEGER NOT NULL, bucket INTEGER NOT NULL,
        checks INTEGER NOT NULL, failures INTEGER NOT NULL, inconclusive INTEGER NOT NULL,
        p50 INTEGER, p95 INTEGER, max INTEGER,
        sketch BLOB,            -- only while the bucket is open
        PRIMARY KEY(pair, tier, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE target_rollups(
        pair INTEGER NOT NULL, tier INTEGER NOT NULL, bucket INTEGER NOT NULL,
        up_ms INTEGER NOT NULL, degraded_ms INTEGER NOT NULL, down_ms INTEGER NOT NULL,
        maint_ms INTEGER NOT NULL, unknown_ms INTEGER NOT NULL,
        open INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(pair, tier, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE incidents(
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        peak TEXT NOT NULL,
        regions TEXT NOT NULL,
        versions_start TEXT NOT NULL,
        versions_end TEXT NOT NULL,
        maintenance INTEGER NOT NULL,
        note TEXT
    );
    CREATE INDEX incidents_by_target ON incidents(target, started_at);
    CREATE INDEX incidents_by_start ON incidents(started_at);
    CREATE INDEX incidents_open ON incidents(ended_at) WHERE ended_at IS NULL;
    CREATE TABLE deploys(
        pair INTEGER NOT NULL, at REAL NOT NULL, version TEXT NOT NULL,
        PRIMARY KEY(pair, at)
    ) WITHOUT ROWID;
    CREATE TABLE announcements(
        id INTEGER PRIMARY KEY, text TEXT NOT NULL, at REAL NOT NULL, cleared_at REAL
    );
    CREATE TABLE maintenance(
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        reason TEXT NOT NULL,
        silences TEXT NOT NULL,
        errors TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX maintenance_by_end ON maintenance(ends_at);
    """,
)


# A bucket is written again when it closed more than once: a target forgotten and back
# within the hour, a clean stop and a start within the minute. A closed row then adds to the
# closed row already there (never replaces it: that would erase what it held); an open row
# (a checkpoint) replaces an open one and never touches a closed one (the open part is read
# from memory meanwhile). Percentiles cannot be added: the row with more checks keeps its.
_ADD = (
    "{c} = CASE WHEN {open} THEN excluded.{c} "
    "WHEN {new_closed} THEN {c} + excluded.{c} ELSE {c} END"
)
_MAX = "MAX(COALESCE(max, excluded.max), COALESCE(excluded.max, max))"
_PICK = (
    "{c} = CASE WHEN {open} THEN excluded.{c} "
    "WHEN {new_closed} AND excluded.checks > checks THEN excluded.{c} ELSE {c} END"
)


def _upsert(table: str, width: int, key: str, adds: tuple[str, ...], picks: tuple[str, ...],
            open_: str, new_closed: str, extra: str = "") -> str:  # fmt: skip
    sets = [_ADD.format(c=c, open=open_, new_closed=new_closed) for c in adds]
    sets += [_PICK.format(c=c, open=open_, new_closed=new_closed) for c in picks]
    return (
        f"INSERT INTO {table} VALUES({','.join('?' * width)}) ON CONFLICT({key}) DO UPDATE SET "
        + ", ".join([*sets, *([extra] if extra else [])])
    )


_COUNTS = ("checks", "failures", "inconclusive")
_TIMES = ("up_ms", "degraded_ms", "down_ms", "maint_ms", "unknown_ms")
# Minute rows are always closed.
UPSERT_REGION_MINUTE = _upsert(
    "region_minutes", 8, "bucket, pair", _COUNTS, ("p50", "p95"), "0", "1", f"max = {_MAX}",
)  # fmt: skip
UPSERT_TARGET_MINUTE = _upsert("target_minutes", 7, "bucket, pair", _TIMES, (), "0", "1")
UPSERT_REGION_ROLLUP = _upsert(
    "region_rollups", 10, "pair, tier, bucket", _COUNTS, ("p50", "p95"),
    "sketch IS NOT NULL", "excluded.sketch IS NULL",
    "max = CASE WHEN sketch IS NOT NULL THEN excluded.max "
    f"WHEN excluded.sketch IS NULL THEN {_MAX} ELSE max END, "
    "sketch = CASE WHEN sketch IS NOT NULL THEN excluded.sketch ELSE sketch END",
)  # fmt: skip
UPSERT_TARGET_ROLLUP = _upsert(
    "target_rollups", 9, "pair, tier, bucket", _TIMES, (), "open = 1", "excluded.open = 0",
    "open = CASE WHEN open = 1 THEN excluded.open ELSE 0 END",
)  # fmt: skip


# How long the wall clock must stay ahead of the time really passed before a prune trusts it.
TRUST_AHEAD_S = 3600.0


class StorageError(ConfigError):
    """The history database cannot be opened or used; says which file and why.

    A config error: at start it ends the aggregator with exit code 2, naming the file.
    """


@dataclass(frozen=True)
class Retention:
    """How long each tier's rows are kept, in seconds."""

    minute: float = 48 * 3600.0
    hour: float = 90 * 86400.0
    day: float = 2 * 365 * 86400.0
    # Closed incidents, deploy markers, maintenance windows and banners.
    events: float = 2 * 365 * 86400.0

    def of(self, tier: Tier) -> float:
        """The retention of one tier."""
        return {Tier.MINUTE: self.minute, Tier.HOUR: self.hour, Tier.DAY: self.day}[tier]


@dataclass(frozen=True)
class LatencyRow:
    """One bucket of one region's latency, in ms (None: no successful check)."""

    region: str
    bucket: int
    p50: float | None
    p95: float | None
    max: float | None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _migrate(conn: sqlite3.Connection) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise StorageError(
            f"schema version {version} is newer than this Vigil knows ({len(MIGRATIONS)}): "
            "written by a newer Vigil; upgrade, or move the file away to start a new history"
        )
    for number in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[number].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number + 1}")
        conn.execute("COMMIT")
    return len(MIGRATIONS)


def _incident(row: Sequence[Any]) -> Incident:
    regions = {
        name: RegionInvolvement(float(r["first_failure_at"]), r.get("first_error"))
        for name, r in json.loads(row[5]).items()
    }
    return Incident(
        id=int(row[0]),
        target=str(row[1]),
        started_at=float(row[2]),
        ended_at=None if row[3] is None else float(row[3]),
        peak=Verdict(row[4]),
        regions=regions,
        versions_start=json.loads(row[6]),
        versions_end=json.loads(row[7]),
        maintenance=bool(row[8]),
        note=row[9],
    )


_INCIDENT_COLUMNS = (
    "id, target, started_at, ended_at, peak, regions, versions_start, versions_end, "
    "maintenance, note"
)


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value * _LATENCY_SCALE)


def _from_ms(value: int | None) -> float | None:
    return None if value is None else value / _LATENCY_SCALE


class HistoryDB:
    """One SQLite file: a writer thread for changes, a reader thread for queries."""

    def __init__(
        self,
        path: Path,
        retention: Retention = Retention(),
        *,
        max_pending: int = 200_000,
        on_write_error: Callable[[str], None] = lambda _what: None,
        on_dropped: Callable[[int], None] = lambda _n: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._retention = retention
        self._max_pending = max_pending
        self._on_write_error = on_write_error
        self._on_dropped = on_dropped
        self._clock = clock
        self._writes: queue.SimpleQueue[
            tuple[str, Callable[[sqlite3.Connection], None], int] | None
        ]
        self._writes = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vigil-db-read")
        self._read_conn: sqlite3.Connection | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._pair_ids: dict[tuple[str, str], int] = {}
        self._last_prune = 0.0
        # The wall clock when opened and the monotonic clock then: a prune never deletes
        # by a wall clock further ahead than the time that really passed (a clock stepped
        # years ahead for a moment must not take the whole history with it).
        self._wall0 = clock()
        self._mono0 = time.monotonic()
        self._ahead_since: float | None = None
        self.write_errors = 0
        self.dropped = 0

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating or migrating) the file and start the writer.

        Raises:
            StorageError: the file cannot be created, is not a database, is corrupt, is
                read-only, or has a schema newer than this code.
        """
        try:
            if self.path.parent and not self.path.parent.exists():
                raise StorageError(
                    f"storage.path: {self.path}: directory {self.path.parent} does not exist"
                )
            conn = _connect(self.path)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("history_not_wal", extra={"path": str(self.path), "mode": mode})
            conn.execute("PRAGMA synchronous=NORMAL")
            # Statistics from a sample of each index: enough for the prune's skip-scan, and
            # `PRAGMA optimize` after a prune stays milliseconds on a gigabyte file.
            conn.execute("PRAGMA analysis_limit=1000")
            try:
                _migrate(conn)
            except StorageError as exc:
                raise StorageError(f"storage.path: {self.path}: {exc}") from None
            # No integrity check here: it reads every page (seconds at a gigabyte, before
            # the aggregator may start). A file that is not a database fails just above;
            # damage deeper in shows as counted write or read errors, never as a crash.
            # A write now, so a read-only file or directory is an error at start.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS probe_write(x)")
            conn.execute("DROP TABLE probe_write")
            conn.execute("COMMIT")
            # Buckets a previous process left open that have ended since: final now (what
            # they hold is all there will be), so readers count them.
            now = self._clock()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE region_rollups SET sketch = NULL "
                "WHERE sketch IS NOT NULL AND bucket + tier <= ?",
                (now,),
            )
            conn.execute(
                "UPDATE target_rollups SET open = 0 WHERE open = 1 AND bucket + tier <= ?", (now,)
            )
            conn.execute("COMMIT")
            for pid, target, region in conn.execute("SELECT id, target, region FROM pairs"):
                self._pair_ids[(target, region)] = pid
        except StorageError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(f"storage.path: {self.path}: {exc}") from None
        except OSError as exc:
            raise StorageError(f"storage.path: {self.path}: {exc.strerror or exc}") from None
        self._write_conn = conn
        self._read_conn = _connect(self.path)
        self._read_conn.execute("PRAGMA query_only=1")
        self._writer = threading.Thread(target=self._write_loop, name="vigil-db-write", daemon=True)
        self._writer.start()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued writes (waiting at most `timeout`) and close the file."""
        busy = False
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join(timeout)
            busy = self._writer.is_alive()
            self._writer = None
        self._reader.shutdown(wait=True)
        if busy:  # still writing: its connection is its own until the process ends
            log.warning("history_close_timeout", extra={"pending": self._pending})
        elif self._write_conn is not None:
            self._write_conn.close()
        if self._read_conn is not None:
            self._read_conn.close()
        self._read_conn = self._write_conn = None

    @property
    def pending(self) -> int:
        """Rows queued for the writer."""
        return self._pending

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued write is done (for tests and a clean stop)."""
        return self._idle.wait(timeout)

    # -- writing --------------------------------------------------------------------------

    def _submit(self, what: str, op: Callable[[sqlite3.Connection], None], size: int = 1) -> None:
        with self._pending_lock:
            if self._pending + size > self._max_pending:
                self.dropped += size
                self._on_dropped(size)
                return
            self._pending += size
            self._idle.clear()
        self._writes.put((what, op, size))

    def _write_loop(self) -> None:
        conn = self._write_conn
        assert conn is not None
        while True:
            item = self._writes.get()
            batch = [item]
            while True:  # everything queued so far, in one transaction
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            ops = [b for b in batch if b is not None]
            self._run(conn, [(what, op) for what, op, _size in ops])
            self._maybe_prune(conn)
            with self._pending_lock:
                # Once per op, whatever became of it (a retried op is not counted twice).
                self._pending -= sum(size for _what, _op, size in ops)
                if self._pending == 0:
                    self._idle.set()
            if stop:
                return

    def _run(
        self, conn: sqlite3.Connection, ops: list[tuple[str, Callable[[sqlite3.Connection], None]]]
    ) -> None:
        try:
            conn.execute("BEGIN")
            for _what, op in ops:
                op(conn)
            conn.execute("COMMIT")
            return
        except Exception:  # the writer thread must outlive any one bad write
            self._rolled_back(conn)
        # One op at a time: one bad write must not take the batch with it.
        for what, op in ops:
            try:
                conn.execute("BEGIN")
                op(conn)
                conn.execute("COMMIT")
            except Exception as exc:
                self._rolled_back(conn)
                self.write_errors += 1
                self._on_write_error(what)
                log.error("history_write_failed", extra={"what": what, "error": repr(exc)})

    def _rolled_back(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        # Ids of pairs inserted in the transaction went with it.
        self._pair_ids = dict(self._committed_pairs())

    def _committed_pairs(self) -> dict[tuple[str, str], int]:
        conn = self._write_conn
        if conn is None:
            return {}
        try:
            rows = conn.execute("SELECT id, target, region FROM pairs").fetchall()
        except sqlite3.Error:
            return {}
        return {(t, r): int(pid) for pid, t, r in rows}

    def has_target(self, target: str) -> bool:
        """Whether the file holds a history of `target` (its verdict rows were ever written).

        Answered from the writer's map of pair ids, without a query: asking about names
        anyone can invent costs nothing. Called on the event loop while the writer may add
        to the map: a dict lookup is atomic, and a pair whose insert is being rolled back
        only costs the caller a query that finds nothing.
        """
        return (target, "") in self._pair_ids

    def _pair(self, conn: sqlite3.Connection, target: str, region: str) -> int:
        key = (target, region)
        pid = self._pair_ids.get(key)
        if pid is None:
            conn.execute("INSERT OR IGNORE INTO pairs(target, region) VALUES(?, ?)", key)
            pid = int(
                conn.execute(
                    "SELECT id FROM pairs WHERE target = ? AND region = ?", key
                ).fetchone()[0]
            )
            self._pair_ids[key] = pid
        return pid

    def write_rollups(self, regions: Sequence[RegionRow], targets: Sequence[TargetRow]) -> None:
        """Queue rollup rows (replacing what a bucket held)."""
        regions, targets = list(regions), list(targets)

        def op(conn: sqlite3.Connection) -> None:
            minutes, coarse = [], []
            for r in regions:
                d = r.data
                values = (
                    d.checks,
                    d.failures,
                    d.inconclusive,
                    _ms(d.sketch.quantile(0.5)),
                    _ms(d.sketch.quantile(0.95)),
                    _ms(d.max_ms) if d.sketch.n else None,
                )
                pair = self._pair(conn, r.target, r.region)
                if r.tier is Tier.MINUTE:
                    minutes.append((r.bucket, pair, *values))
                else:
                    blob = None if r.final else d.sketch.encode()
                    coarse.append((pair, int(r.tier), r.bucket, *values, blob))
            conn.executemany(UPSERT_REGION_MINUTE, sorted(minutes))
            conn.executemany(UPSERT_REGION_ROLLUP, coarse)
            t_minutes, t_coarse = [], []
            for t in targets:
                v = t.data
                times = (v.up_ms, v.degraded_ms, v.down_ms, v.maint_ms, v.unknown_ms)
                pair = self._pair(conn, t.target, "")
                if t.tier is Tier.MINUTE:
                    t_minutes.append((t.bucket, pair, *times))
                else:
                    t_coarse.append((pair, int(t.tier), t.bucket, *times, 0 if t.final else 1))
            conn.executemany(UPSERT_TARGET_MINUTE, sorted(t_minutes))
            conn.executemany(UPSERT_TARGET_ROLLUP, t_coarse)

        self._submit("rollups", op, max(1, len(regions) + len(targets)))

    def write_incidents(self, incidents: Iterable[Incident]) -> None:
        """Queue incidents to insert or replace (they carry their ids)."""
        rows = [
            (
                i.id,
                i.target,
                i.started_at,
                i.ended_at,
                i.peak.value,
                json.dumps({k: v.to_doc() for k, v in i.regions.items()}),
                json.dumps(i.versions_start),
                json.dumps(i.versions_end),
                int(i.maintenance),
                i.note,
            )
            for i in incidents
        ]
        if not rows:
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT OR REPLACE INTO incidents({_INCIDENT_COLUMNS}) "
                "VALUES(?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

        self._submit("incidents", op, len(rows))

    def write_deploys(self, markers: Sequence[tuple[str, str, float, str]]) -> None:
        """Queue version changes: (target, region, at, version)."""
        if not markers:
            return
        markers = list(markers)

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO deploys VALUES(?,?,?)",
                [(self._pair(conn, t, r), at, v) for t, r, at, v in markers],
            )

        self._submit("deploys", op, len(markers))

    def write_note(self, incident_id: int, note: str) -> None:
        """Queue an incident's note (only the note: the rest of the row is left as it is)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE incidents SET note = ? WHERE id = ?", (note, incident_id))

        self._submit("incidents", op)

    def write_window(self, window: Window) -> None:
        """Queue a maintenance window."""
        row = (
            window.id,
            window.target,
            window.starts_at,
            window.ends_at,
            window.reason,
            json.dumps(window.silences),
            json.dumps(window.errors),
            window.created_at,
        )

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO maintenance VALUES(?,?,?,?,?,?,?,?)", row)

        self._submit("maintenance", op)

    def write_announcement(self, announcement_id: int, announcement: Announcement) -> None:
        """Queue a new banner (the previous ones are cleared at its time)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE announcements SET cleared_at = ? WHERE cleared_at IS NULL",
                (announcement.at,),
            )
            conn.execute(
                "INSERT OR REPLACE INTO announcements VALUES(?,?,?,NULL)",
                (announcement_id, announcement.text, announcement.at),
            )

        self._submit("announcement", op)

    def clear_announcements(self, at: float) -> None:
        """Queue taking every banner down."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE announcements SET cleared_at = ? WHERE cleared_at IS NULL", (at,))

        self._submit("announcement", op)

    def _prune_clock(self) -> float:
        """The wall clock, but not ahead of the time really passed since it was last trusted.

        A clock behind that is taken at once (deleting less is safe); one ahead only once it
        has stayed ahead for `TRUST_AHEAD_S` (NTP correcting a clock that booted wrong), never
        for a moment's wrong clock.
        """
        now, mono = self._clock(), time.monotonic()
        expected = self._wall0 + (mono - self._mono0)
        if now <= expected + 60.0:
            self._ahead_since = None
            if now < expected:
                self._wall0, self._mono0 = now, mono
            return now
        if self._ahead_since is None:
            self._ahead_since = mono
        elif mono - self._ahead_since >= TRUST_AHEAD_S:
            self._wall0, self._mono0, self._ahead_since = now, mono, None
            return now
        return expected

    def _maybe_prune(self, conn: sqlite3.Connection) -> None:
        now = self._prune_clock()
        if 0.0 <= now - self._last_prune < 3600.0:
            return
        self._last_prune = now
        try:
            conn.execute("BEGIN")
            cutoff = now - self._retention.minute
            conn.execute("DELETE FROM region_minutes WHERE bucket < ?", (cutoff,))
            conn.execute("DELETE FROM target_minutes WHERE bucket < ?", (cutoff,))
            for tier in (Tier.HOUR, Tier.DAY):
                cutoff = now - self._retention.of(tier)
                # With statistics (`PRAGMA optimize` below) SQLite skip-scans the key
                # (pair, tier, bucket) here instead of reading the whole table.
                conn.execute(
                    "DELETE FROM region_rollups WHERE tier = ? AND bucket < ?", (int(tier), cutoff)
                )
                conn.execute(
                    "DELETE FROM target_rollups WHERE tier = ? AND bucket < ?", (int(tier), cutoff)
                )
            events = now - self._retention.events
            conn.execute("DELETE FROM incidents WHERE ended_at < ?", (events,))
            conn.execute("DELETE FROM deploys WHERE at < ?", (events,))
            conn.execute("DELETE FROM maintenance WHERE ends_at < ?", (events,))
            conn.execute("DELETE FROM announcements WHERE cleared_at < ?", (events,))
            conn.execute("COMMIT")
            conn.execute("PRAGMA optimize=0x10002")  # analyse the tables that need it
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.write_errors += 1
            self._on_write_error("prune")
            log.error("history_prune_failed", extra={"error": repr(exc)})

    # -- start-up reads (synchronous: before the loop serves anything) ---------------------

    def load_open_rollups(self, now: float) -> list[RegionRow | TargetRow]:
        """The hour and day buckets still open at `now`, to resume counting into."""
        conn = self._conn()
        out: list[RegionRow | TargetRow] = []
        for tier in (Tier.HOUR, Tier.DAY):
            start = int(now // tier.value) * tier.value
            for target, region, bucket, checks, failures, inconclusive, mx, blob in conn.execute(
                "SELECT p.target, p.region, r.bucket, r.checks, r.failures, r.inconclusive, "
                "r.max, r.sketch FROM region_rollups r JOIN pairs p ON p.id = r.pair "
                "WHERE r.tier = ? AND r.bucket = ? AND r.sketch IS NOT NULL",
                (int(tier), start),
            ):
                try:
                    sketch = Sketch.decode(blob)
                except ValueError:
                    continue
                data = RegionBucket(checks, failures, inconclusive, _from_ms(mx) or 0.0, sketch)
                out.append(RegionRow(tier, target, region, bucket, data, False))
            for row in conn.execute(
                "SELECT p.target, t.bucket, t.up_ms, t.degraded_ms, t.down_ms, t.maint_ms, "
                "t.unknown_ms FROM target_rollups t JOIN pairs p ON p.id = t.pair "
                "WHERE t.tier = ? AND t.bucket = ? AND t.open = 1",
                (int(tier), start),
            ):
                out.append(TargetRow(tier, row[0], row[1], TargetBucket(*row[2:]), False))
        return out

    def load_open_incidents(self) -> tuple[int, list[Incident]]:
        """The next incident id, and the incidents not closed yet."""
        conn = self._conn()
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM incidents").fetchone()[0]
        rows = conn.execute(
            f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE ended_at IS NULL"  # noqa: S608
        ).fetchall()
        return int(top) + 1, [_incident(r) for r in rows]

    def load_versions(self) -> dict[tuple[str, str], str]:
        """The latest version recorded per (target, region)."""
        conn = self._conn()
        # SQLite's bare column with MAX(): the version of the row holding the latest `at`.
        return {
            (t, r): v
            for t, r, v, _at in conn.execute(
                "SELECT p.target, p.region, d.version, MAX(d.at) FROM deploys d "
                "JOIN pairs p ON p.id = d.pair GROUP BY d.pair"
            )
        }

    def _conn(self) -> sqlite3.Connection:
        if self._read_conn is None:
            raise StorageError(f"storage.path: {self.path}: not open")
        return self._read_conn

    # -- queries (on the reader thread) ---------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a query on the reader thread."""
        conn = self._conn()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, fn, conn)
        except sqlite3.Error as exc:
            raise StorageError(f"storage.path: {self.path}: {exc}") from None
