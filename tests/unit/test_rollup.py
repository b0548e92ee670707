"""Rollups and the latency sketch: buckets, tiers, verdict time, deploy markers, resume."""

from __future__ import annotations

import math
import random

import pytest

from aggregator.core.rollup import (
    CHECKPOINT_MINUTES,
    SKETCH_GAMMA,
    Flushed,
    RegionRow,
    Rollups,
    Sketch,
    TargetRow,
    Tier,
)
from wire.result import ErrorKind, ProbeResult
from wire.state import Verdict

# A UTC day boundary (so also an hour, a minute and a checkpoint boundary).
DAY = 1_789_948_800
assert DAY % 86400 == 0
assert (DAY // 60) % CHECKPOINT_MINUTES == 0
# The documented relative accuracy: a bucket's midpoint is within (g - 1) / (g + 1) < 2%.
ACCURACY = 0.02

_seq = 0


def result(
    ok: bool = True,
    *,
    ms: float = 10.0,
    region: str = "us-east",
    target: str = "api",
    inconclusive: bool = False,
    version: str | None = None,
    at: float = DAY,
) -> ProbeResult:
    global _seq
    _seq += 1
    if inconclusive:
        kind: ErrorKind | None = ErrorKind.INTERNAL
        streaks = (0, 0)
    elif ok:
        kind, streaks = None, (0, 1)
    else:
        kind, streaks = ErrorKind.HTTP_STATUS, (1, 0)
    return ProbeResult(
        probe_id=f"{region}-1",
        region=region,
        target=target,
        boot_id="b" * 32,
        seq=_seq,
        scheduled_at=at,
        started_at=at,
        duration_ms=ms,
        ok=ok and not inconclusive,
        error_kind=kind,
        inconclusive=inconclusive,
        version=version,
        consecutive_failures=streaks[0],
        consecutive_successes=streaks[1],
    )


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest rank, as the sketch documents."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def rows(flushes: list[Flushed]) -> tuple[list[RegionRow], list[TargetRow]]:
    regions = [r for f in flushes for r in f.regions]
    targets = [t for f in flushes for t in f.targets]
    return regions, targets


# -- Sketch ---------------------------------------------------------------------------------


def test_the_midpoint_bound_is_within_two_percent() -> None:
    """The gamma chosen keeps a bucket's midpoint within 2% of any value in the bucket."""
    assert 2 * SKETCH_GAMMA / (1 + SKETCH_GAMMA) - 1 <= ACCURACY
    assert 1 - 2 / (1 + SKETCH_GAMMA) <= ACCURACY


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("q", [0.01, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_sketch_quantiles_are_within_two_percent_of_exact(seed: int, q: float) -> None:
    """Every quantile of random latencies is within 2% of the exact nearest-rank one."""
    rng = random.Random(seed)
    values = [rng.lognormvariate(3.0, 1.5) + 0.05 for _ in range(5000)]
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    got = sketch.quantile(q)
    want = exact_quantile(values, q)
    assert got is not None
    assert abs(got - want) <= ACCURACY * want, (got, want)


def test_empty_sketch_has_no_quantile() -> None:
    """An empty sketch answers None, not zero."""
    assert Sketch().quantile(0.5) is None


def test_merge_equals_adding_everything() -> None:
    """Merging two sketches gives the counts of one sketch fed both inputs."""
    rng = random.Random(7)
    a_vals = [rng.uniform(0.001, 900.0) for _ in range(700)]
    b_vals = [rng.uniform(5.0, 20_000.0) for _ in range(300)]
    a, b, both = Sketch(), Sketch(), Sketch()
    for v in a_vals:
        a.add(v)
        both.add(v)
    for v in b_vals:
        b.add(v)
        both.add(v)
    a.merge(b)
    assert a.counts == both.counts
    assert a.n == both.n == 1000
    for q in (0.1, 0.5, 0.95):
        assert a.quantile(q) == both.quantile(q)


def test_encode_decode_round_trip() -> None:
    """A decoded sketch has the counts (and so the quantiles) of the encoded one."""
    s = Sketch()
    for v in (0.001, 0.5, 12.0, 12.1, 250.0, 250.0, 99_999.0):
        s.add(v)
    back = Sketch.decode(s.encode())
    assert back.counts == s.counts
    assert back.n == s.n == 7
    assert back.quantile(0.5) == s.quantile(0.5)
    assert Sketch.decode(Sketch().encode()).n == 0


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"\x00", id="short"),
        pytest.param(b"abcde", id="not-whole-pairs"),
        pytest.param(b"\x01" * 7, id="a-pair-and-a-byte"),
        # Whole pairs, but not what `encode` writes: a repeated index, a zero count.
        pytest.param(b"x" * 12, id="repeated-index"),
        pytest.param(bytes(6), id="zero-count"),
    ],
)
def test_decode_rejects_bytes_it_did_not_write(blob: bytes) -> None:
    """Bytes `encode` could not have written are a ValueError."""
    with pytest.raises(ValueError, match="not a sketch"):
        Sketch.decode(blob)


# -- Rollups: checks -------------------------------------------------------------------------


def test_a_minute_closes_into_one_final_row_per_pair() -> None:
    """Results of one minute give exactly one final minute row per (target, region)."""
    r = Rollups()
    assert not r.flush(DAY)  # the first flush only opens the minute
    r.observe(result(True, ms=10.0, at=DAY + 1))
    r.observe(result(False, at=DAY + 2))
    r.observe(result(inconclusive=True, at=DAY + 3))
    r.observe(result(True, ms=30.0, at=DAY + 4))
    r.observe(result(True, ms=20.0, region="eu-west", at=DAY + 5))
    assert not r.flush(DAY + 59)  # same minute: nothing closes
    regions, _ = rows([r.flush(DAY + 60), r.flush(DAY + 61), r.flush(DAY + 119)])
    minute = [x for x in regions if x.tier is Tier.MINUTE]
    assert sorted((x.region, x.bucket, x.final) for x in minute) == [
        ("eu-west", DAY, True),
        ("us-east", DAY, True),
    ]
    east = next(x for x in minute if x.region == "us-east").data
    assert (east.checks, east.failures, east.inconclusive) == (4, 1, 1)
    # Latency only from the two successful checks.
    assert east.sketch.n == 2
    assert east.max_ms == 30.0
    p95 = east.sketch.quantile(0.95)
    assert p95 is not None
    assert abs(p95 - 30.0) <= 30.0 * ACCURACY


def test_failed_and_inconclusive_checks_add_no_latency() -> None:
    """A slow failure or inconclusive check leaves max and percentiles alone."""
    r = Rollups()
    r.flush(DAY)
    r.observe(result(False, ms=9000.0))
    r.observe(result(inconclusive=True, ms=8000.0))
    regions, _ = rows([r.flush(DAY + 60)])
    (row,) = [x for x in regions if x.tier is Tier.MINUTE]
    assert (row.data.checks, row.data.failures, row.data.inconclusive) == (2, 1, 1)
    assert row.data.sketch.n == 0
    assert row.data.max_ms == 0.0
    assert row.data.sketch.quantile(0.5) is None


def test_hour_and_day_rows_are_open_until_their_bucket_ends() -> None:
    """Hour and day rows are written open (final=False) and become final once they end."""
    # Open buckets are written only every CHECKPOINT_MINUTES (readers take them from memory).
    r = Rollups()
    r.flush(DAY)
    r.observe(result(True, at=DAY + 1))
    first = r.flush(DAY + 60)
    assert [x.tier for x in first.regions] == [Tier.MINUTE]  # not a checkpoint minute
    r.observe(result(False, at=DAY + 61))
    regions, _ = rows([r.flush(DAY + CHECKPOINT_MINUTES * 60)])
    coarse = sorted((x.tier, x.bucket, x.final, x.data.checks) for x in regions if x.tier > 60)
    assert coarse == [(Tier.HOUR, DAY, False, 2), (Tier.DAY, DAY, False, 2)]

    # The hour ends (a result in its last minute): final at the first flush of the next hour.
    r.observe(result(True, at=DAY + 3500))
    r.flush(DAY + 3540)
    r.observe(result(True, at=DAY + 3599))
    regions, _ = rows([r.flush(DAY + 3600), r.flush(DAY + 3660)])
    hour0 = [x for x in regions if x.tier is Tier.HOUR and x.bucket == DAY]
    assert [(x.final, x.data.checks) for x in hour0] == [(True, 4)]
    assert not [x for x in regions if x.tier is Tier.DAY and x.final]
    r.observe(result(True, at=DAY + 3661))

    # The day ends: its row is final once, with every check of the day.
    r.observe(result(True, at=DAY + 86_399))
    r.flush(DAY + 86_340)
    r.observe(result(True, at=DAY + 86_399))
    regions, _ = rows([r.flush(DAY + 86_400), r.flush(DAY + 86_460)])
    day0 = [x for x in regions if x.tier is Tier.DAY and x.bucket == DAY]
    assert [(x.final, x.data.checks) for x in day0] == [(True, 7)]


def test_open_buckets_are_read_from_memory_and_written_whole_at_a_clean_stop() -> None:
    """Between checkpoints the open hour and day are in memory; `open_rows` writes them all."""
    r = Rollups()
    r.flush(DAY)
    r.verdict("api", Verdict.UP, DAY)
    r.observe(result(True, at=DAY + 1))
    r.flush(DAY + 60)
    r.observe(result(False, at=DAY + 61))
    r.flush(DAY + 120)
    regions = r.open_regions("api", ["us-east", "nowhere"])
    assert {k: (b, d.checks, d.failures) for k, (b, d) in regions.items()} == {
        (Tier.HOUR, "us-east"): (DAY, 2, 1),
        (Tier.DAY, "us-east"): (DAY, 2, 1),
    }
    assert r.open_target("api")[Tier.HOUR][1].up_ms == 120_000
    assert r.open_targets(Tier.DAY)["api"][1].up_ms == 120_000
    # Copies: what a reader holds does not move under it.
    regions[(Tier.HOUR, "us-east")][1].checks = 99
    assert r.open_regions("api", ["us-east"])[(Tier.HOUR, "us-east")][1].checks == 2
    rows_out = r.open_rows()
    assert sorted((x.tier, x.final, x.data.checks) for x in rows_out.regions) == [
        (Tier.HOUR, False, 2),
        (Tier.DAY, False, 2),
    ]
    assert sorted((t.tier, t.final) for t in rows_out.targets) == [
        (Tier.HOUR, False),
        (Tier.DAY, False),
    ]


def test_an_hour_with_a_quiet_last_minute_still_closes() -> None:
    """An hour whose last minutes had no result is closed final at the next hour's flush."""
    r = Rollups()
    r.flush(DAY)
    r.observe(result(True, at=DAY + 5))
    r.flush(DAY + 60)
    regions, _ = rows([r.flush(DAY + 3600 + 120)])
    hour0 = [x for x in regions if x.tier is Tier.HOUR and x.bucket == DAY]
    assert [(x.final, x.data.checks) for x in hour0] == [(True, 1)]


# -- Rollups: verdict time -------------------------------------------------------------------


def _down_around(edge: int) -> list[TargetRow]:
    """Up from edge - 2 min, down from edge - 30 s to edge + 30 s, a flush every minute."""
    r = Rollups()
    r.flush(edge - 120)
    r.verdict("api", Verdict.UP, edge - 120)
    flushes = [r.flush(edge - 60)]
    r.verdict("api", Verdict.DOWN, edge - 30)
    flushes.append(r.flush(edge))
    r.verdict("api", Verdict.UP, edge + 30)
    flushes += [r.flush(edge + 60 * m) for m in range(1, CHECKPOINT_MINUTES + 1)]
    # Closed buckets from the flushes, then the open ones as a clean stop writes them.
    _, targets = rows([*flushes, r.open_rows()])
    return targets


@pytest.mark.parametrize(
    ("edge", "tier", "bucket", "down_ms", "final"),
    [
        # A minute edge (00:10:00): 30 s in each minute, the whole minute in its hour and day.
        (DAY + 600, Tier.MINUTE, DAY + 540, 30_000, True),
        (DAY + 600, Tier.MINUTE, DAY + 600, 30_000, True),
        (DAY + 600, Tier.HOUR, DAY, 60_000, False),
        (DAY + 600, Tier.DAY, DAY, 60_000, False),
        # 00:59:30 to 01:00:30: 30 s in each hour.
        (DAY + 3600, Tier.HOUR, DAY, 30_000, True),
        (DAY + 3600, Tier.HOUR, DAY + 3600, 30_000, False),
        (DAY + 3600, Tier.DAY, DAY, 60_000, False),
        # 23:59:30 to 00:00:30: 30 s in each day.
        (DAY + 86400, Tier.DAY, DAY, 30_000, True),
        (DAY + 86400, Tier.DAY, DAY + 86400, 30_000, False),
        (DAY + 86400, Tier.HOUR, DAY + 82800, 30_000, True),
        (DAY + 86400, Tier.HOUR, DAY + 86400, 30_000, False),
    ],
)
def test_verdict_time_splits_exactly_at_bucket_edges(
    edge: int, tier: Tier, bucket: int, down_ms: int, final: bool
) -> None:
    """Down time that straddles a bucket edge is split to the millisecond."""
    found = [t for t in _down_around(edge) if t.tier is tier and t.bucket == bucket]
    assert found, f"no {tier.label} row for {bucket}"
    row = found[-1]
    assert row.data.down_ms == down_ms
    assert row.final is final


@pytest.mark.parametrize(
    ("verdict", "maintenance", "field"),
    [
        (Verdict.UP, False, "up_ms"),
        (Verdict.DEGRADED, False, "degraded_ms"),
        (Verdict.DOWN, False, "down_ms"),
        (Verdict.DOWN, True, "maint_ms"),
        (Verdict.UNKNOWN, False, "unknown_ms"),
        # A maintenance window does not turn up time into maintenance.
        (Verdict.UP, True, "up_ms"),
    ],
)
def test_verdict_time_goes_to_its_own_column(
    verdict: Verdict, maintenance: bool, field: str
) -> None:
    """Each verdict's time is counted in its column; down in a window as maintenance."""
    r = Rollups(lambda _t, start, end: (end - start) if maintenance else 0.0)
    r.flush(DAY)
    r.verdict("api", verdict, DAY)
    r.flush(DAY + 300)
    hour = r.open_target("api")[Tier.HOUR][1]
    columns = {
        k: getattr(hour, k) for k in ("up_ms", "degraded_ms", "down_ms", "maint_ms", "unknown_ms")
    }
    assert columns == {k: (300_000 if k == field else 0) for k in columns}


# -- Rollups: deploys and restarts -------------------------------------------------------------


def test_deploy_markers_only_on_version_change() -> None:
    """A marker when a (target, region)'s version changes, none when it repeats or is absent."""
    r = Rollups()
    seen = [
        r.observe(result(version="1.0", at=DAY + 1)),
        r.observe(result(version="1.0", at=DAY + 2)),
        r.observe(result(version=None, at=DAY + 3)),
        r.observe(result(version="1.1", at=DAY + 400)),
        r.observe(result(version="1.0", region="eu-west", at=DAY + 5)),
        r.observe(result(version="1.1", at=DAY + 406)),
    ]
    assert seen == [
        ("api", "us-east", DAY + 1, "1.0"),
        None,
        None,
        ("api", "us-east", DAY + 400, "1.1"),
        ("api", "eu-west", DAY + 5, "1.0"),
        None,
    ]
    # After a restart the stored versions hold: the same version is no new deploy.
    again = Rollups()
    again.resume([], {("api", "us-east"): "1.1"})
    assert again.observe(result(version="1.1", at=DAY + 7)) is None
    assert again.observe(result(version="1.2", at=DAY + 8)) == ("api", "us-east", DAY + 8, "1.2")


def test_resume_continues_the_open_hour() -> None:
    """A restart resumes the stored open hour: checks and verdict time are not started afresh."""
    before = Rollups()
    before.flush(DAY)
    before.verdict("api", Verdict.UP, DAY)
    for i in range(3):
        before.observe(result(True, at=DAY + 10 + i))
    for m in range(1, 11):  # a flush every minute to 00:10
        before.flush(DAY + 60 * m)
    stored = before.open_rows()  # as a clean stop writes them: the open hour and day
    open_rows: list[RegionRow | TargetRow] = [
        *[x for x in stored.regions if not x.final],
        *[t for t in stored.targets if not t.final],
    ]
    assert {(x.tier, x.final) for x in open_rows} == {(Tier.HOUR, False), (Tier.DAY, False)}

    after = Rollups()
    after.resume(open_rows)
    after.flush(DAY + 900)
    after.verdict("api", Verdict.DOWN, DAY + 900)
    after.observe(result(False, at=DAY + 901))
    after.flush(DAY + 960)
    # A flush every minute, as the tick does, to past the hour's end.
    regions, targets = rows([after.flush(DAY + 60 * m) for m in range(17, 62)])
    # (Checkpoints of the open hour come before; the final row closes it.)
    hour = [x for x in regions if x.tier is Tier.HOUR and x.bucket == DAY and x.final]
    assert [(x.final, x.data.checks, x.data.failures) for x in hour] == [(True, 4, 1)]
    assert hour[0].data.sketch.n == 3
    thour = [t for t in targets if t.tier is Tier.HOUR and t.bucket == DAY and t.final]
    # Up 00:00-00:10 from the first process (the 00:10-00:15 restart gap is not counted),
    # down 00:15-01:00 from the second.
    assert [(t.final, t.data.up_ms, t.data.down_ms) for t in thour] == [(True, 600_000, 2_700_000)]


def test_forget_closes_the_targets_open_buckets() -> None:
    """A forgotten target's open buckets are written final and its time stops counting."""
    r = Rollups()
    r.flush(DAY)
    r.verdict("api", Verdict.UP, DAY)
    r.flush(DAY + 60)
    r.forget("api")
    _, targets = rows([r.flush(DAY + 120), r.flush(DAY + 600)])
    assert {(t.tier, t.final) for t in targets} == {
        (Tier.MINUTE, True),
        (Tier.HOUR, True),
        (Tier.DAY, True),
    }
    hour = next(t for t in targets if t.tier is Tier.HOUR)
    assert hour.data.up_ms == 60_000


def test_down_time_splits_at_a_maintenance_windows_start() -> None:
    """Down time before a window starts is down, after it maintenance, to the second."""
    starts = DAY + 270  # 00:04:30, mid-minute
    r = Rollups(lambda _t, start, end: max(0.0, min(end, DAY + 3600) - max(start, starts)))
    r.flush(DAY)
    r.verdict("api", Verdict.DOWN, DAY)
    for m in range(1, 11):  # a flush at every minute's end
        r.flush(DAY + 60 * m)
    hour = r.open_target("api")[Tier.HOUR][1]
    assert (hour.down_ms, hour.maint_ms) == (270_000, 330_000)


def test_a_flapping_version_is_marked_at_most_once_per_interval() -> None:
    """A canary behind a load balancer: versions alternate, markers stay few."""
    r = Rollups()
    markers = [
        r.observe(result(version="1.0" if k % 2 else "1.1", at=DAY + k), DAY + k)
        for k in range(600)  # ten minutes of results a second apart
    ]
    # Each version once per 300 s: at 0 and 1 s, then at 300 and 301 s.
    assert [m[2] - DAY for m in markers if m is not None] == [0, 1, 300, 301]


def test_a_long_gap_is_no_data_not_the_old_verdict() -> None:
    """The process suspended (or the clock stepped) for a day: no verdict time for it."""
    r = Rollups()
    r.flush(DAY)
    r.verdict("api", Verdict.DOWN, DAY)
    r.flush(DAY + 60)
    r.flush(DAY + 86_400 + 60)  # a day later, in one step
    r.flush(DAY + 86_400 + 120)
    day0 = r.open_rows()
    _, targets = rows([day0])
    assert sum(t.data.down_ms for t in targets if t.tier is Tier.DAY) == 60_000
    assert all(t.data.unknown_ms == 0 for t in targets)


def test_a_clock_stepping_back_never_closes_a_bucket_twice() -> None:
    """After a step back the open minute keeps counting until the clock is past it again."""
    r = Rollups()
    r.flush(DAY + 7200)
    r.observe(result(True, at=DAY + 7201), DAY + 7201)
    first = r.flush(DAY + 7260)
    assert [x.bucket for x in first.regions if x.tier is Tier.MINUTE] == [DAY + 7200]
    assert r.flush(DAY + 60) == Flushed()  # two hours back: nothing closes
    r.observe(result(True, at=DAY + 61), DAY + 61)
    again = r.flush(DAY + 7320)
    minutes = [(x.bucket, x.data.checks) for x in again.regions if x.tier is Tier.MINUTE]
    assert minutes == [(DAY + 7260, 1)]  # counted in the open minute, not a past one


def test_a_version_that_changes_with_every_answer_is_marked_a_few_times_only() -> None:
    """A build id per pod, a timestamp: at most 3 markers per 5 minutes per region."""
    r = Rollups()
    markers = [r.observe(result(version=f"build-{k}", at=DAY + k), DAY + k) for k in range(600)]
    assert [m[2] - DAY for m in markers if m is not None] == [0, 1, 2, 300, 301, 302]
    assert r.markers_dropped == 594
