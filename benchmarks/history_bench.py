"""History storage benchmarks (issue #13); prints a markdown section for docs/performance.md.

1. Size: the rows `Rollups` would have written for N targets x 3 regions every 10 s over D
   days (minute rows for the minute retention, hourly and daily rows, every target's verdict
   rows per tier, an incident per target a week, a deploy per target a week) are generated
   and written into a real SQLite file through `HistoryDB`'s own write path, in the order
   production writes them (a minute at a time, every pair), without waiting D days.
2. Queries at that size: the history API's views (`edges/historyapi.py`) on an asyncio loop
   against random targets; `HistoryDB.open()` and `History.open()` on the big file; one
   minute's flush at that size (loop time, writer time, WAL bytes); the hourly prune.
3. Ingest with storage on and off: `aggregator_bench.drain_aggregator` drains the same MQTT
   backlog at a real mosquitto into an aggregator with and without `storage.path`,
   interleaved, one process per drain.

Usage: python benchmarks/history_bench.py [--targets N] [--days N] [--quick]
    [--messages N] [--drain-targets N] [--rounds N] [--output FILE] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator_bench import (  # noqa: E402
    drain_aggregator,
    end_session,
    make_session,
    publish,
    results,
)
from report import machine, now, write_figures, write_section  # noqa: E402

from aggregator.config import SloConfig, StorageConfig  # noqa: E402
from aggregator.core.incidents import Incident, RegionInvolvement  # noqa: E402
from aggregator.core.rollup import (  # noqa: E402
    CHECKPOINT_MINUTES,
    RegionBucket,
    RegionRow,
    TargetBucket,
    TargetRow,
    Tier,
    bucket_of,
)
from aggregator.edges import historyapi as api  # noqa: E402
from aggregator.edges.historydb import HistoryDB, Retention  # noqa: E402
from aggregator.recorder import History  # noqa: E402
from demo.local import free_port, mosquitto_binary, mosquitto_conf, wait_port  # noqa: E402
from tests.rulekit import REGIONS, RegionProbe  # noqa: E402
from wire.state import Verdict  # noqa: E402

INTERVAL = 10.0
CHECKS_PER_MINUTE = int(60 / INTERVAL)
RETENTION = Retention()
# Rows queued for the writer before generation waits for it (memory, not correctness).
PENDING_LIMIT = 300_000
GOAL_MS = 100.0
DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "helperC" / "history_figures.md"

# Reading a file alone: nothing open in memory.
NONE_OPEN = api.OpenBuckets({}, {})


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- 1. generated history -----------------------------------------------------------------


def region_bucket(rng: random.Random, checks: int, base_ms: float) -> RegionBucket:
    """A bucket of `checks` checks, as `Rollups.observe` would have counted them."""
    b = RegionBucket()
    # A bad bucket now and then: failures, and an inconclusive check (probe overloaded).
    failures = rng.choice((0,) * 30 + (1, 2, checks // 3))
    inconclusive = 1 if rng.random() < 0.02 else 0
    b.checks = checks
    b.failures = min(failures, checks - inconclusive)
    b.inconclusive = inconclusive
    # Latencies wander around a base value: about 6 distinct sketch buckets for a minute.
    for _ in range(checks - b.failures - b.inconclusive):
        ms = base_ms * rng.choice((0.9, 0.95, 1.0, 1.05, 1.1, 1.6)) * rng.uniform(0.99, 1.01)
        b.sketch.add(ms)
        b.max_ms = max(b.max_ms, ms)
    return b


def target_bucket(rng: random.Random, tier: Tier) -> TargetBucket:
    """A target's verdict time in one bucket: up, with the odd outage."""
    total = tier.value * 1000
    roll = rng.random()
    if roll < 0.97:
        return TargetBucket(up_ms=total)
    bad = rng.randrange(1000, max(1001, total // 4))
    if roll < 0.985:
        return TargetBucket(up_ms=total - bad, degraded_ms=bad)
    if roll < 0.995:
        return TargetBucket(up_ms=total - bad, down_ms=bad)
    return TargetBucket(up_ms=total - bad, maint_ms=bad)


@dataclass
class Pools:
    """Buckets to draw rows from: computing a sketch per row would make generation take hours.

    Rows share bucket objects; the bytes stored per row are what production stores for such a
    bucket (the write path computes p50/p95/max, and encodes the sketch of open rows).
    """

    regions: dict[Tier, list[RegionBucket]]
    targets: dict[Tier, list[TargetBucket]]

    @classmethod
    def make(cls, rng: random.Random, size: int = 512) -> Pools:
        regions: dict[Tier, list[RegionBucket]] = {}
        for tier in Tier:
            checks = CHECKS_PER_MINUTE * tier.value // 60
            pool = []
            for _ in range(size if tier is Tier.MINUTE else size // 8):
                base = rng.choice((4.0, 12.0, 25.0, 60.0, 150.0)) * rng.uniform(0.8, 1.2)
                if tier is Tier.MINUTE:
                    pool.append(region_bucket(rng, checks, base))
                else:
                    # A coarse bucket is its minutes merged: a wider sketch.
                    merged = RegionBucket()
                    for _ in range(tier.value // 60):
                        merged.merge(region_bucket(rng, CHECKS_PER_MINUTE, base))
                    pool.append(merged)
            regions[tier] = pool
        targets = {tier: [target_bucket(rng, tier) for _ in range(size)] for tier in Tier}
        return cls(regions, targets)


@dataclass
class Generated:
    """What was written, and how long it took."""

    targets: int
    days: float
    now: int
    region_rows: dict[Tier, int] = field(default_factory=lambda: dict.fromkeys(Tier, 0))
    target_rows: dict[Tier, int] = field(default_factory=lambda: dict.fromkeys(Tier, 0))
    incidents: int = 0
    deploys: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.region_rows.values()) + sum(self.target_rows.values())


def names(targets: int) -> list[str]:
    return [f"svc-{i:05d}.example.internal" for i in range(targets)]


class Writer:
    """Feeds `HistoryDB.write_rollups` as a flush would, never past `PENDING_LIMIT` queued."""

    def __init__(self, db: HistoryDB, gen: Generated, pools: Pools, rng: random.Random) -> None:
        self.db, self.gen, self.pools, self.rng = db, gen, pools, rng
        self.targets = names(gen.targets)

    def bucket(self, tier: Tier, bucket: int, final: bool) -> None:
        """Every pair's and target's row of one bucket."""
        regions, targets = self.pools.regions[tier], self.pools.targets[tier]
        pick = self.rng.randrange
        region_rows = [
            RegionRow(tier, t, r, bucket, regions[pick(len(regions))], final)
            for t in self.targets
            for r in REGIONS
        ]
        target_rows = [
            TargetRow(tier, t, bucket, targets[pick(len(targets))], final) for t in self.targets
        ]
        while self.db.pending > PENDING_LIMIT:
            time.sleep(0.005)
        self.db.write_rollups(region_rows, target_rows)
        self.gen.region_rows[tier] += len(region_rows)
        self.gen.target_rows[tier] += len(target_rows)


def generate(path: Path, targets: int, days: float, seed: int = 13) -> Generated:
    """Write `days` of history for `targets` x 3 regions, ending now, as production would."""
    rng = random.Random(seed)
    at = bucket_of(time.time(), Tier.MINUTE)
    gen = Generated(targets, days, at)
    pools = Pools.make(rng)
    db = HistoryDB(path, RETENTION, max_pending=10**9, clock=lambda: float(at))
    db.open()
    # A bigger page cache only makes generation faster: the rows and their order are the same.
    assert db._write_conn is not None
    db._write_conn.execute("PRAGMA cache_size=-262144")
    writer = Writer(db, gen, pools, rng)
    t0, c0 = time.perf_counter(), cpu_seconds()
    # One hour more than the retention of minute and hourly rows: the next prune's share.
    start = bucket_of(at - days * 86400, Tier.HOUR) - 3600
    minutes_from = at - RETENTION.minute - 3600
    hours_from = at - RETENTION.hour - 3600
    current_hour, current_day = bucket_of(at, Tier.HOUR), bucket_of(at, Tier.DAY)
    for hour in range(start, current_hour + 1, 3600):
        for minute in range(hour, min(hour + 3600, at), 60):
            if minute >= minutes_from:
                writer.bucket(Tier.MINUTE, minute, True)
        if hour >= hours_from:
            writer.bucket(Tier.HOUR, hour, hour != current_hour)
        day = bucket_of(hour, Tier.DAY)
        if hour + 3600 == day + 86400 or hour == current_hour:
            writer.bucket(Tier.DAY, day, day != current_day)
    write_events(db, gen, rng, start)
    assert db.flush(timeout=3600), "the writer did not finish"
    gen.seconds, gen.cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    assert db.dropped == 0
    assert db.write_errors == 0
    db.close()
    return gen


def write_events(db: HistoryDB, gen: Generated, rng: random.Random, start: int) -> None:
    """An incident per target a week (a few still open), a deploy per target a week."""
    weeks = max(1, math.ceil((gen.now - start) / (7 * 86400)))
    found: list[Incident] = []
    markers: list[tuple[str, str, float, str]] = []
    for n, target in enumerate(names(gen.targets)):
        for week in range(weeks):
            week_start = start + week * 7 * 86400
            deployed = week_start + rng.uniform(0, 7 * 86400)
            if deployed < gen.now:
                for region in REGIONS:
                    markers.append((target, region, deployed + rng.uniform(0, 30), f"2.{week}.0"))
            began = week_start + rng.uniform(0, 7 * 86400)
            if began >= gen.now - 60:
                continue
            regions = rng.sample(REGIONS, rng.randint(1, len(REGIONS)))
            # The last incident of one target in 300 is still open.
            still_open = week == weeks - 1 and n % 300 == 0
            ended = None if still_open else min(gen.now - 1, began + rng.uniform(60, 1800))
            versions = dict.fromkeys(REGIONS, f"2.{week}.0")
            found.append(
                Incident(
                    id=0,
                    target=target,
                    started_at=began,
                    peak=rng.choice((Verdict.DOWN, Verdict.DEGRADED)),
                    ended_at=ended,
                    regions={
                        r: RegionInvolvement(
                            began - rng.uniform(0, 30), "http_status: HTTP 503: upstream timeout"
                        )
                        for r in regions
                    },
                    versions_start=versions,
                    versions_end=dict(versions),
                )
            )
    found.sort(key=lambda i: i.started_at)
    for number, incident in enumerate(found, 1):
        incident.id = number
    markers.sort(key=lambda m: m[2])
    for i in range(0, len(found), 1000):
        db.write_incidents(found[i : i + 1000])
    for i in range(0, len(markers), 1000):
        db.write_deploys(markers[i : i + 1000])
    gen.incidents, gen.deploys = len(found), len(markers)


# -- size ---------------------------------------------------------------------------------


def checkpoint(path: Path) -> tuple[int, int, int, int]:
    """Sizes of the file and its -wal before and after `wal_checkpoint(TRUNCATE)`."""
    wal = Path(f"{path}-wal")

    def sizes() -> tuple[int, int]:
        return path.stat().st_size, wal.stat().st_size if wal.exists() else 0

    before = sizes()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return (*before, *sizes())


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes of pages per table or index (dbstat), and the free pages."""
    conn = sqlite3.connect(path)
    try:
        out = {
            str(name): int(size)
            for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
        }
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        out["(free pages)"] = int(conn.execute("PRAGMA freelist_count").fetchone()[0]) * page
    finally:
        conn.close()
    return out


def steady_rows(targets: int, days: float) -> tuple[int, int]:
    """(region rows, target rows) kept at steady state after `days` days."""
    per_pair = (
        RETENTION.minute / 60 + min(days, RETENTION.hour / 86400) * 24 + min(days, 730)
    )  # minute, hourly, daily rows
    return round(targets * len(REGIONS) * per_pair), round(targets * per_pair)


def projection(gen: Generated, tables: dict[str, int], targets: int, days: float) -> float:
    """Bytes of a file with `targets` after `days`, at this file's bytes per row."""
    region_b = tables.get("region_rollups", 0) / max(1, sum(gen.region_rows.values()))
    target_b = tables.get("target_rollups", 0) / max(1, sum(gen.target_rows.values()))
    event_names = ("incidents", "incidents_by_target", "incidents_by_start", "incidents_open")
    incident_b = sum(tables.get(n, 0) for n in event_names) / max(1, gen.incidents)
    deploy_b = tables.get("deploys", 0) / max(1, gen.deploys)
    regions, target_rows = steady_rows(targets, days)
    weeks = days / 7
    return (
        regions * region_b
        + target_rows * target_b
        + targets * weeks * incident_b
        + targets * len(REGIONS) * weeks * deploy_b
    )


# -- 2. queries ---------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
    }


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000


async def query_times(db: HistoryDB, gen: Generated, repeat: int) -> dict[str, list[float]]:
    """Each view, `repeat` times on random targets, in ms (the listing fewer times)."""
    rng = random.Random(7)
    slo = SloConfig()
    budgets = list(slo.latency_budgets_ms)
    at = float(gen.now + 30)
    every = names(gen.targets)
    middle = max(1, gen.incidents // 2)
    views: dict[str, Callable[[str], Awaitable[object]]] = {
        "uptime of a target (`uptime_view`)": lambda t: api.uptime_view(db, t, at, slo, NONE_OPEN),
        "latency, 24 h of hourly rows": lambda t: api.latency_view(
            db, t, at, 24, budgets, NONE_OPEN
        ),
        "latency, 1 h of minute rows": lambda t: api.latency_view(db, t, at, 1, budgets, NONE_OPEN),
        "incidents of a target (20)": lambda t: api.incidents_view(db, at, target=t, limit=20),
        "incidents, all targets (20)": lambda _t: api.incidents_view(db, at, limit=20),
        "incidents, all, a page back": lambda _t: api.incidents_view(
            db, at, before=middle, limit=20
        ),
        "incidents since 7 d (100)": lambda _t: api.incidents_view(
            db, at, since=at - 7 * 86400, limit=100
        ),
        "uptime list, every target": lambda _t: api.uptime_list_view(db, at, slo, None),
    }

    async def target_page(t: str) -> None:
        # What `HistoryRoutes.target_extra` runs for one target's page.
        await api.uptime_view(db, t, at, slo, NONE_OPEN)
        await api.latency_view(db, t, at, 24, budgets, NONE_OPEN)
        await api.incidents_view(db, at, target=t, limit=20)

    async def overview(_t: str) -> None:
        await api.uptime_list_view(db, at, slo, None)
        await api.incidents_view(db, at, limit=20)

    views["target page (uptime + latency + incidents)"] = target_page
    views["overview (uptime list + incidents)"] = overview
    out: dict[str, list[float]] = {name: [] for name in views}
    for view in views.values():  # one warm-up each, not counted
        await view(every[0])
    for k in range(repeat):
        for name, view in views.items():
            # The listing reads every target: fewer runs of it.
            if ("every target" in name or "overview" in name) and k >= max(5, repeat // 3):
                continue
            target = every[rng.randrange(len(every))]
            out[name].append(await timed(partial(view, target)))
    return out


async def plans(db: HistoryDB, gen: Generated) -> list[str]:
    """Statements the views run that scan a rollup table instead of searching it."""
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    def untrace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(None)

    await db.read(trace)
    at = float(gen.now + 30)
    target = names(gen.targets)[0]
    slo = SloConfig()
    await api.uptime_view(db, target, at, slo, NONE_OPEN)
    await api.uptime_list_view(db, at, slo, None)
    await api.latency_view(db, target, at, 24, [], NONE_OPEN)
    await api.latency_view(db, target, at, 1, [], NONE_OPEN)
    await api.incidents_view(db, at, target=target, limit=20)
    await api.incidents_view(db, at, since=at - 86400, limit=20)
    await db.read(untrace)
    found: list[str] = []
    for sql in dict.fromkeys(statements):

        def explain(conn: sqlite3.Connection, sql: str = sql) -> list[str]:
            return [str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]

        for step in await db.read(explain):
            if (step.startswith("SCAN") and "rollups" in step) or "TEMP B-TREE" in step:
                found.append(f"`{step}` in `{' '.join(sql.split())[:160]}...`")
    return found


def open_times(path: Path, at: float, repeat: int = 3) -> dict[str, float]:
    """Seconds for `HistoryDB.open()` (with `PRAGMA quick_check(1)`) and `History.open()`."""
    db_s, history_s, check_s = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        db = HistoryDB(path, RETENTION, clock=lambda: at)
        db.open()
        db_s.append(time.perf_counter() - t0)
        db.close()
        t0 = time.perf_counter()
        history = History.open(StorageConfig(path=path), clock=lambda: at)
        history_s.append(time.perf_counter() - t0)
        history.close()
        conn = sqlite3.connect(path)
        t0 = time.perf_counter()
        conn.execute("PRAGMA quick_check(1)").fetchone()
        check_s.append(time.perf_counter() - t0)
        conn.close()
    return {"db_open_s": min(db_s), "history_open_s": min(history_s), "quick_check_s": min(check_s)}


def minute_flushes(path: Path, gen: Generated, minutes: int = 3) -> dict[str, float]:
    """One minute's flush at this size: the loop's slices, the writer, the WAL it writes.

    Three minutes, the second of them a checkpoint minute (the open hour and day of every
    pair written, every `CHECKPOINT_MINUTES`): `ordinary` figures are the median of the
    other two, `checkpoint_*` that one.
    """
    at = float(gen.now + 1)
    first = bucket_of(at, Tier.MINUTE) // 60
    at += 60 * ((-(first + 2)) % CHECKPOINT_MINUTES)
    clock = [at]
    history = History.open(StorageConfig(path=path), clock=lambda: clock[0])
    db = history.db
    conn = db._write_conn
    assert conn is not None
    # The prune is measured on its own; no automatic checkpoint while measuring, so the
    # WAL holds exactly what one flush wrote (the checkpoint is timed by itself).
    db._last_prune = at
    conn.execute("PRAGMA wal_autocheckpoint=0")
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    probes = [RegionProbe(r, target=t) for t in names(gen.targets) for r in REGIONS]
    for target in names(gen.targets):
        history.rollups.verdict(target, Verdict.UP, at)
    list(history.tick_slices(at))  # opens the first minute
    figures: dict[str, list[float]] = {
        k: []
        for k in (
            *("observe_us", "loop_ms", "slice_ms", "slices"),
            *("write_ms", "cpu_ms", "wal_bytes", "checkpoint_ms"),
        )
    }
    for m in range(minutes):
        start = bucket_of(at, Tier.MINUTE) + 60 * m
        batch = [
            p.check(k != 3 or m != 1, start + 10 * k, version=None)
            for k in range(CHECKS_PER_MINUTE)
            for p in probes
        ]
        t0 = time.perf_counter()
        for result in batch:
            history.observe(result, start)
        figures["observe_us"].append((time.perf_counter() - t0) / len(batch) * 1e6)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        clock[0] = start + 61.0
        slices: list[float] = []
        # The loop's slices, then the writer's commits while this thread only waits: the
        # process's CPU over both is the flush's whole cost.
        cpu0 = cpu_seconds()
        begun = t0 = time.perf_counter()
        for _ in history.tick_slices(clock[0]):
            t1 = time.perf_counter()
            slices.append(t1 - t0)
            t0 = t1
        assert db.flush(timeout=600)
        figures["write_ms"].append((time.perf_counter() - begun) * 1000)
        figures["cpu_ms"].append((cpu_seconds() - cpu0) * 1000)
        figures["loop_ms"].append(sum(slices) * 1000)
        figures["slice_ms"].append(max(slices, default=0.0) * 1000)
        figures["slices"].append(len(slices))
        cpu0 = cpu_seconds()
        frames = int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        figures["checkpoint_ms"].append((cpu_seconds() - cpu0) * 1000)
        figures["wal_bytes"].append(frames * (page + 24))
    history.close()
    out = {k: statistics.median([v[0], v[2]]) for k, v in figures.items()}
    out |= {f"checkpoint_{k}": v[1] for k, v in figures.items()}
    return out


def prune_times(path: Path, gen: Generated) -> dict[str, Any]:
    """The hourly prune at this size: as the writer runs it, then with ANALYZE's statistics."""
    out: dict[str, Any] = {}
    clock = [float(gen.now + 3600)]
    db = HistoryDB(path, RETENTION, clock=lambda: clock[0])
    db.open()
    conn = db._write_conn
    assert conn is not None
    delete = "DELETE FROM region_rollups WHERE tier = ? AND bucket < ?"

    def plan() -> str:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {delete}", (60, 0)).fetchall()
        return "; ".join(str(r[-1]) for r in rows)

    def prune() -> tuple[float, int]:
        # The writer thread is idle (nothing queued): its connection is free to use here.
        changes = conn.total_changes
        t0 = time.perf_counter()
        db._maybe_prune(conn)
        return time.perf_counter() - t0, conn.total_changes - changes

    out["plan"] = plan()
    out["seconds"], out["deleted"] = prune()
    t0 = time.perf_counter()
    conn.execute("ANALYZE")
    out["analyze_s"] = time.perf_counter() - t0
    out["plan_analyzed"] = plan()
    clock[0] += 3600
    db._wall0 += 3600  # an hour really passed, as far as the prune's clock guard knows
    out["seconds_analyzed"], out["deleted_analyzed"] = prune()
    assert db.write_errors == 0
    db.close()
    return out


# -- 3. ingest with storage on and off ------------------------------------------------------


def drain(args: argparse.Namespace) -> dict[str, Any]:
    """Queue the backlog once per drain, drain it in a process of its own, on and off."""
    work = Path(tempfile.mkdtemp(prefix="vigil-histbench-"))
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, work, extra="max_queued_messages 0\nmax_queued_bytes 0\n"))
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("bench: mosquitto missing; run ./scripts/bootstrap.sh")
    broker = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    try:
        wait_port(port)
        per_pair = max(1, args.messages // (args.drain_targets * len(REGIONS)))
        messages = results(args.drain_targets, per_pair)
        for round_ in range(args.rounds):
            for mode in ("on", "off"):
                client_id = f"bench-history-{mode}-r{round_}"
                asyncio.run(make_session(port, client_id, args.protocol))
                asyncio.run(publish(port, messages))
                cmd = [sys.executable, __file__, "--contender", mode, "--port", str(port)]
                cmd += ["--expect", str(len(messages)), "--client-id", client_id]
                cmd += ["--protocol", args.protocol, "--storage", str(work / f"{client_id}.db")]
                out = subprocess.run(
                    cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=900
                )
                asyncio.run(end_session(port, client_id))
                figures = dict(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"storage {mode}: {json.dumps(figures)}", flush=True)
                runs[mode].append(figures)
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return {"messages": len(messages), "runs": runs}


# -- report -------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    gen: Generated = r["gen"]
    pairs = gen.targets * len(REGIONS)
    size = r["size"]
    tables: dict[str, int] = r["tables"]
    lines = [
        "## History storage",
        "",
        f"- Date: {now()}",
        f"- Machine: {machine()}",
        f"- Command: `{r['command']}`",
        "",
        f"### Size: {gen.targets:,} targets x 3 regions every {INTERVAL:g} s, {gen.days:g} days",
        "",
        "Rows as `Rollups` writes them, generated (not waited for) and written through",
        "`HistoryDB.write_rollups` / `write_incidents` / `write_deploys` into a real file, a",
        "minute of every pair at a time as a flush does: minute rows for the minute retention",
        f"({RETENTION.minute / 3600:g} h) plus the hour the next prune removes, hourly rows",
        f"({min(gen.days, RETENTION.hour / 86400):g} d + 1 h), daily rows, each target's verdict",
        f"rows per tier, {gen.incidents:,} incidents (one per target a week) and",
        f"{gen.deploys:,} deploy markers (one per target a week, per region).",
        "",
        "| tier | (target, region) rows | target rows |",
        "|---|---|---|",
    ]
    for tier in Tier:
        lines.append(f"| {tier.label} | {gen.region_rows[tier]:,} | {gen.target_rows[tier]:,} |")
    lines += [
        "",
        f"Generated and written in **{gen.seconds:,.0f} s** ({gen.rows / gen.seconds:,.0f} rows/s,"
        f" {gen.cpu_s:,.0f} s CPU across the generator and the writer thread).",
        "",
        f"- File: **{mib(size[2])}** after `PRAGMA wal_checkpoint(TRUNCATE)` (-wal"
        f" {mib(size[3])}; before it: file {mib(size[0])}, -wal {mib(size[1])}).",
        f"- Per (target, region) per day: **{size[2] / pairs / gen.days / 1024:,.1f} KiB**"
        f" (file / {pairs:,} pairs / {gen.days:g} days); per pair: {size[2] / pairs / 1024:,.1f}"
        " KiB.",
        f"- Steady state after 90 days (minute and hourly rows stop growing), at this file's"
        f" bytes per row: {mib(r['proj_90'])} for {gen.targets:,} targets"
        f" ({r['proj_90'] / pairs / 90 / 1024:,.1f} KiB per pair per day of the 90,"
        f" {r['proj_90'] / pairs / 1024:,.0f} KiB per pair); after 2 years (daily rows and"
        f" events kept): {mib(r['proj_730'])}; 10,000 targets after 2 years:"
        f" {mib(r['proj_730'] * 10_000 / gen.targets)}.",
        "",
        "| table or index | bytes |",
        "|---|---|",
    ]
    for name, n in sorted(tables.items(), key=lambda kv: -kv[1]):
        if n >= 64 * 1024:
            lines.append(f"| {name} | {mib(n)} |")
    o = r["open"]
    lines += [
        "",
        "### Queries at that size",
        "",
        "The history API's views (`aggregator/edges/historyapi.py`) on an asyncio loop, each on",
        "the reader thread as the pages run them, on random targets; the OS page cache is warm",
        f"(the file was just written). Goal: under {GOAL_MS:g} ms each.",
        "",
        "| view | runs | median | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for name, samples in r["queries"].items():
        s = summary(samples)
        flag = "" if s["max"] < GOAL_MS else " (over the goal)"
        lines.append(
            f"| {name} | {s['n']:.0f} | {s['median']:.1f} ms | {s['p95']:.1f} ms"
            f" | {s['max']:.1f} ms{flag} |"
        )
    scans = r["scans"]
    lines += [
        "",
        "Plans: "
        + (
            "; ".join(scans)
            if scans
            else "every view searches by key or index"
            " (no scan of a rollup table, no temporary sort)."
        ),
        "",
        f"- `HistoryDB.open()`: **{o['db_open_s'] * 1000:,.0f} ms** (it runs no integrity"
        f" check: `PRAGMA quick_check(1)` reads every page whatever its limit and took"
        f" {o['quick_check_s'] * 1000:,.0f} ms here); `History.open()` with the resume reads:"
        f" {o['history_open_s'] * 1000:,.0f} ms.",
    ]
    f = r["flush"]
    p = r["prune"]
    lines += [
        f"- One ordinary minute's flush at {gen.targets:,} targets (minute rows, appended"
        f" together as their keys are time-first, and verdict rows): {f['slices']:.0f} slices,"
        f" {f['loop_ms']:.1f} ms of event loop in all, the longest slice {f['slice_ms']:.1f} ms;"
        f" committed {f['write_ms']:.0f} ms after it began, {f['cpu_ms']:.0f} ms of CPU with"
        f" the writer thread's; it adds **{mib(f['wal_bytes'])} to the WAL**, whose checkpoint"
        f" takes {f['checkpoint_ms']:.0f} ms of CPU. Every {CHECKPOINT_MINUTES}th minute also"
        f" writes the open hour and day of every pair (a page per pair, keys pair-first):"
        f" {f['checkpoint_slices']:.0f} slices, the longest {f['checkpoint_slice_ms']:.1f} ms,"
        f" {f['checkpoint_cpu_ms']:.0f} ms of CPU, **{mib(f['checkpoint_wal_bytes'])} to the"
        f" WAL**. `History.observe` costs {f['observe_us']:.2f} us per result.",
        f"- Hourly prune (`_maybe_prune`) at steady state, deleting the hour that aged out"
        f" ({p['deleted']:,} rows): **{p['seconds'] * 1000:,.0f} ms** on the writer thread,"
        f" write lock held. Plan: `{p['plan']}`. After `ANALYZE`"
        f" ({p['analyze_s']:.1f} s): `{p['plan_analyzed']}`, the next hour's prune"
        f" ({p['deleted_analyzed']:,} rows) {p['seconds_analyzed'] * 1000:,.0f} ms.",
    ]
    if "ingest" in r:
        lines += ["", *ingest_report(args, r["ingest"], r["flush"])]
    return "\n".join(lines) + "\n"


def ingest_report(
    args: argparse.Namespace, ing: dict[str, Any], flush: dict[str, float]
) -> list[str]:
    runs = ing["runs"]
    n = ing["messages"]

    def us(run: dict[str, Any]) -> float:
        return float(run["cpu_s"]) / float(run["messages"]) * 1e6

    def rate(run: dict[str, Any]) -> float:
        return float(run["messages"]) / float(run["seconds"])

    best = {m: min(runs[m], key=lambda x: x["seconds"]) for m in runs}
    med_us = {m: statistics.median(us(x) for x in runs[m]) for m in runs}
    rows = [
        f"| {m} | {i + 1} | {x['seconds']:.2f} s | {rate(x):,.0f}/s | {us(x):.1f} us"
        f" | {int(x['received']):,} |"
        for i in range(args.rounds)
        for m in ("on", "off")
        for x in (runs[m][i],)
    ]
    slower_rate = rate(best["off"]) / rate(best["on"]) - 1
    slower_cpu = med_us["on"] / med_us["off"] - 1
    # At the live rate the minute flush is paid once a minute on top of the results.
    per_min = args.drain_targets * len(REGIONS) * CHECKS_PER_MINUTE
    ordinary = flush["cpu_ms"] + flush["checkpoint_ms"]
    # Every CHECKPOINT_MINUTES-th minute costs its own; spread over the minutes between.
    extra = flush["checkpoint_cpu_ms"] + flush["checkpoint_checkpoint_ms"] - ordinary
    history_ms = per_min * flush["observe_us"] / 1000 + ordinary + extra / CHECKPOINT_MINUTES
    live = history_ms / (per_min * med_us["off"] / 1000)
    return [
        f"### Ingest with storage on and off ({n:,} results, {args.drain_targets:,} targets x 3)",
        "",
        "`aggregator_bench.drain_aggregator` drains the same backlog at a real mosquitto on",
        f"127.0.0.1 (MQTT {args.protocol}), once with `storage.path` set (a new file each",
        "time) and once without, interleaved, one process per drain; CPU includes the writer",
        "thread. No tick runs during a drain, so no minute is flushed: that cost is above.",
        "",
        "| storage | round | time | rate | CPU per result | received |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- Best drain rate: on {rate(best['on']):,.0f}/s, off {rate(best['off']):,.0f}/s:"
        f" storage on is **{slower_rate:+.1%}** slower (goal: under 10%); median CPU per"
        f" result on {med_us['on']:.1f} us, off {med_us['off']:.1f} us ({slower_cpu:+.1%}).",
        f"- Live, {args.drain_targets:,} targets x 3 every {INTERVAL:g} s ({per_min:,} results a"
        f" minute, {per_min * med_us['off'] / 1000:,.0f} ms of ingest CPU at the storage-off"
        f" cost): `History.observe` per result plus one minute's flush and its checkpoint"
        f" (CPU, measured above at {args.targets:,} targets) is **{live:+.1%}** of it.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--quick", action="store_true", help="100 targets, 7 days, small drain")
    parser.add_argument("--repeat", type=int, default=50, help="runs of each view")
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--drain-targets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="on/off drains, interleaved")
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="where the file goes")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--write-docs", action="store_true", help="docs/performance.md too")
    parser.add_argument("--contender", choices=["on", "off"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--client-id", default="bench-history")
    parser.add_argument("--storage", type=Path, default=None)
    args = parser.parse_args()
    if args.contender is not None:
        storage = args.storage if args.contender == "on" else None
        drained = drain_aggregator(args.port, args.expect, args.protocol, args.client_id, storage)
        print(json.dumps(asyncio.run(drained)))
        return
    if args.quick:
        args.targets, args.days = 100, 7.0
        args.messages, args.drain_targets = 6000, 100
    command = "python benchmarks/history_bench.py " + " ".join(
        ["--quick"] if args.quick else [f"--targets {args.targets} --days {args.days:g}"]
    )
    if not args.quick:
        command += f" --messages {args.messages} --drain-targets {args.drain_targets}"
        command += f" --rounds {args.rounds}"
    work = Path(tempfile.mkdtemp(prefix="vigil-history-", dir=args.workdir))
    path = work / "history.db"
    r: dict[str, Any] = {"command": command}
    print(f"generating {args.targets} targets x 3, {args.days:g} days into {path} ...", flush=True)
    gen = r["gen"] = generate(path, args.targets, args.days)
    print(f"generated {gen.rows:,} rows in {gen.seconds:.1f} s", flush=True)
    r["size"] = checkpoint(path)
    r["tables"] = table_bytes(path)
    r["proj_90"] = projection(gen, r["tables"], args.targets, 90)
    r["proj_730"] = projection(gen, r["tables"], args.targets, 730)
    r["open"] = open_times(path, float(gen.now + 30))

    async def queries() -> None:
        db = HistoryDB(path, RETENTION, clock=lambda: float(gen.now + 30))
        db.open()
        try:
            r["queries"] = await query_times(db, gen, args.repeat)
            r["scans"] = await plans(db, gen)
        finally:
            db.close()

    asyncio.run(queries())
    print("queries done; one minute's flush ...", flush=True)
    r["flush"] = minute_flushes(path, gen)
    print("pruning ...", flush=True)
    r["prune"] = prune_times(path, gen)
    if not args.skip_ingest:
        print("ingest, storage on and off ...", flush=True)
        r["ingest"] = drain(args)
    markdown = report(args, r)
    print(markdown)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown)
    print(f"wrote {args.output}; the database is {path}")
    if args.write_docs:
        write_section(ROOT / "docs" / "performance.md", "history", markdown)
        write_figures(
            "history",
            {
                "bytes_per_pair_day": r["proj_90"] / (args.targets * len(REGIONS)) / 90,
                "uptime_view_p95_ms": summary(next(iter(r["queries"].values())))["p95"],
                "prune_s": r["prune"]["seconds"],
            },
        )


if __name__ == "__main__":
    main()
