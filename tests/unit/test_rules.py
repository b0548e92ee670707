"""The rule engine: every verdict and transition, hysteresis, quorum, staleness, skew."""

from __future__ import annotations

import pytest

from aggregator.config import Rule
from aggregator.core import rules
from aggregator.core.rules import (
    PRESENCE_SETTLE_S,
    Applied,
    Engine,
    Verdict,
    next_failing,
)
from tests.rulekit import BOOT, REGIONS, T0, RegionProbe, engine, names, online, state, verdict
from wire.result import Presence, ProbeResult, VersionErrorKind
from wire.state import RegionRecord, StateRecord


def feed(e: Engine, pattern: dict[str, str], start: float = T0, step: float = 10.0) -> float:
    """Feed each region's pattern ('F' fail, 'S' success), one check per step; returns the end."""
    probes = {r: RegionProbe(r) for r in pattern}
    longest = max(len(p) for p in pattern.values())
    at = start
    for i in range(longest):
        for region, p in pattern.items():
            if i < len(p):
                e.apply_result(probes[region].check(p[i] == "S", at), at)
        at += step
    return at - step


@pytest.mark.parametrize(
    ("prior", "failures", "successes", "expected"),
    [
        (False, 1, 0, False),
        (False, 2, 0, False),
        (False, 3, 0, True),
        (True, 0, 1, True),  # one success does not end a failure (hysteresis)
        (True, 0, 2, False),
        (True, 1, 0, True),
        (False, 0, 5, False),
    ],
)
def test_next_failing(prior: bool, failures: int, successes: int, expected: bool) -> None:
    """A region starts failing at N failures and recovers only at K successes."""
    assert next_failing(prior, failures, successes, Rule()) is expected


@pytest.mark.parametrize(
    ("pattern", "expected", "failing"),
    [
        (dict.fromkeys(REGIONS, "SS"), Verdict.UP, set()),
        (
            {"us-east": "FFF", "eu-west": "SSS", "ap-southeast": "SSS"},
            Verdict.DEGRADED,
            {"us-east"},
        ),
        (
            {"us-east": "FFF", "eu-west": "FFF", "ap-southeast": "SSS"},
            Verdict.DEGRADED,
            {"us-east", "eu-west"},
        ),
        (dict.fromkeys(REGIONS, "FFF"), Verdict.DOWN, set(REGIONS)),
        # From a cold start two failures are no evidence either way: pending, so unknown, not up.
        (dict.fromkeys(REGIONS, "FF"), Verdict.UNKNOWN, set()),
        (dict.fromkeys(REGIONS, "S"), Verdict.UNKNOWN, set()),  # one success is not K = 2
        (dict.fromkeys(REGIONS, "SSFF"), Verdict.UP, set()),  # once up, two failures are not down
        (dict.fromkeys(REGIONS, "FFFS"), Verdict.DOWN, set(REGIONS)),  # one success: still failing
        (dict.fromkeys(REGIONS, "FFFSS"), Verdict.UP, set()),  # K successes: recovered
        (dict.fromkeys(REGIONS, "FFFSFSFS"), Verdict.DOWN, set(REGIONS)),  # flapping stays down
        ({"us-east": "SS"}, Verdict.UNKNOWN, set()),  # one fresh region cannot say up
        ({"us-east": "SS", "eu-west": "SS"}, Verdict.UP, set()),  # min_regions fresh is enough
    ],
)
def test_verdicts(pattern: dict[str, str], expected: Verdict, failing: set[str]) -> None:
    """Each combination of regional streaks gives its verdict."""
    e = engine()
    end = feed(e, pattern)
    e.evaluate("api", end)
    assert verdict(e) is expected
    assert state(e).failing == failing


def test_no_results_is_unknown() -> None:
    """A target only known from presence, with no results, is unknown."""
    e = engine()
    e.apply_presence(online("us-east", probe_id="p"), T0)
    e.evaluate("api", T0)
    st = state(e)
    assert st.verdict is Verdict.UNKNOWN
    assert st.expected == {"us-east"}
    assert st.evaluation is not None
    assert {r.stale_reason for r in st.evaluation.regions} == {"no results"}


def test_transitions_carry_evidence() -> None:
    """Going down reports the verdict change and each region's failure with its error."""
    e = engine()
    probes = {r: RegionProbe(r) for r in REGIONS}
    for at in (T0 - 10, T0):  # K = 2 successes: each region has shown it is up
        for r in REGIONS:
            e.apply_result(probes[r].check(True, at), at)
    e.evaluate("api", T0)
    out = []
    for i in range(1, 4):
        for r in REGIONS:
            e.apply_result(probes[r].check(False, T0 + 10 * i), T0 + 10 * i)
            out += e.evaluate("api", T0 + 10 * i)
    assert sorted(names(out)) == sorted(
        ["region:ok->failing"] * 3 + ["verdict:up->degraded", "verdict:degraded->down"]
    )
    down = next(t for t in out if t.new == "down")
    assert down.evaluation is not None
    assert down.evaluation.failing == frozenset(REGIONS)
    errors = {r.region: r.error for r in down.evaluation.regions}
    assert errors["us-east"] == "HTTP 503, expected 200: db down"
    region_t = next(t for t in out if t.kind == "region" and t.region == "us-east")
    assert region_t.since == T0 + 10  # the streak began with the first failure


def test_stale_region_and_degraded_quorum() -> None:
    """One dead probe must not hide a real outage: down on a degraded quorum."""
    e = engine()
    a, b, c = (RegionProbe(r) for r in REGIONS)
    for i in range(3):
        t = T0 + 10 * i
        e.apply_result(a.check(False, t), t)
        e.apply_result(b.check(False, t), t)
    e.apply_result(c.check(True, T0), T0)
    now = T0 + 20
    e.evaluate("api", now)  # c is 20 s old: fresh (stale after 3 x 10 s)
    assert verdict(e) is Verdict.DEGRADED
    out = e.evaluate("api", T0 + 45)  # c is now 45 s old: stale
    st = state(e)
    assert st.verdict is Verdict.DOWN
    assert st.quorum_degraded
    assert "stale:fresh->stale" in names(out)
    assert "verdict:degraded->down" in names(out)


@pytest.mark.parametrize(
    ("duration_s", "after_end", "stale"),
    [
        (0.0, 29.0, False),
        (0.0, 31.0, True),
        (20.0, 29.0, False),  # 49 s after it started, but only 29 s after it ended
        (20.0, 31.0, True),
        (60.0, 29.0, False),  # a check longer than stale_after itself
        (60.0, 31.0, True),
    ],
)
def test_staleness_counts_from_the_end_of_the_latest_check(
    duration_s: float, after_end: float, stale: bool
) -> None:
    """A region is stale once its latest result ended more than stale_after ago, not started."""
    e = engine(Rule(stale_after=30, recoveries=1))
    ok = RegionProbe("us-east").check(True, T0)
    result = ok.model_copy(update={"duration_ms": duration_s * 1000})
    e.apply_result(result, T0 + duration_s)  # received as the check ends
    ev = e.judge("api", T0 + duration_s + after_end)
    assert ("us-east" in ev.stale) is stale
    assert ("us-east" in ev.fresh) is not stale


def test_degraded_quorum_needs_min_regions_fresh() -> None:
    """With only one fresh region failing, the verdict is not down."""
    e = engine()
    a = RegionProbe("us-east")
    for i in range(3):
        e.apply_result(a.check(False, T0 + 10 * i), T0 + 10 * i)
    e.evaluate("api", T0 + 20)
    assert verdict(e) is Verdict.DEGRADED
    assert not state(e).quorum_degraded


def test_offline_presence_makes_a_region_stale_once_settled() -> None:
    """An `offline` presence makes its region stale once settled, without waiting stale_after."""
    e = engine()
    feed(e, {"us-east": "FFF", "eu-west": "FFF", "ap-southeast": "SSS"})
    now = T0 + 25
    e.evaluate("api", now)
    assert verdict(e) is Verdict.DEGRADED
    out = e.apply_presence(
        Presence(
            status="offline", probe_id="ap-southeast-1", region="ap-southeast", boot_id=BOOT, at=now
        ),
        now,
    )
    assert names(out) == ["probe:unknown->offline"]
    e.evaluate("api", now + 1)
    assert verdict(e) is Verdict.DEGRADED  # not yet: a broker shutdown looks like this at first
    settled = now + PRESENCE_SETTLE_S + 0.1
    e.evaluate("api", settled)
    assert verdict(e) is Verdict.DOWN
    assert state(e).quorum_degraded
    assert e.region_stale("ap-southeast", settled)
    assert not e.region_stale("us-east", settled)


def test_version_skew_after_grace() -> None:
    """Regions disagreeing on the version is skew only after version_skew_after."""
    e = engine(Rule(version_skew_after=60, recoveries=1))
    a, b = RegionProbe("us-east"), RegionProbe("eu-west")
    out = []
    for i in range(8):  # 0 .. 70 s, one check every 10 s
        t = T0 + 10 * i
        e.apply_result(a.check(True, t, "3.8.34"), t)
        e.apply_result(b.check(True, t, "3.8.35"), t)
        out.append(names(e.evaluate("api", t)))
    assert out[0] == ["verdict:unknown->up"]
    assert out[1:6] == [[]] * 5  # a deploy in progress for under a minute is not skew
    assert out[6] == ["version_skew:false->true"]
    assert state(e).skew_since == T0
    t = T0 + 80
    e.apply_result(a.check(True, t, "3.8.35"), t)
    e.apply_result(b.check(True, t, "3.8.35"), t)
    assert names(e.evaluate("api", t)) == ["version_skew:true->false"]


def test_version_kept_through_a_failed_fetch_and_change_time_tracked() -> None:
    """A result without a version keeps the last one; a new version records when it changed."""
    e = engine()
    a = RegionProbe("us-east")
    e.apply_result(a.check(True, T0, "1"), T0)
    e.apply_result(a.check(True, T0 + 10, None), T0 + 10)
    view = state(e).regions["us-east"]
    assert (view.version, view.version_since) == ("1", T0)
    e.apply_result(a.check(True, T0 + 20, "2"), T0 + 20)
    view = state(e).regions["us-east"]
    assert (view.version, view.version_since) == ("2", T0 + 20)


def fetch_failed(result: ProbeResult, why: VersionErrorKind) -> ProbeResult:
    """The same result, but its version fetch failed for `why`."""
    return result.model_copy(update={"version": None, "version_error": why})


def test_version_error_kept_beside_the_last_known_version() -> None:
    """The latest version_error is kept per region beside the last version, until a fetch works."""
    e = engine()
    us, eu = RegionProbe("us-east"), RegionProbe("eu-west")
    e.apply_result(us.check(True, T0, "3.7.9"), T0)
    e.apply_result(fetch_failed(eu.check(True, T0, None), VersionErrorKind.AUTH), T0)
    e.apply_result(fetch_failed(us.check(True, T0 + 10, None), VersionErrorKind.CONNECT), T0 + 10)
    regions = state(e).regions
    assert (regions["us-east"].version, regions["us-east"].version_error) == ("3.7.9", "connect")
    assert (regions["eu-west"].version, regions["eu-west"].version_error) == (None, "auth")
    evidence = {r.region: r for r in e.judge("api", T0 + 10).regions}
    assert (evidence["us-east"].version, evidence["us-east"].version_error) == ("3.7.9", "connect")
    assert evidence["eu-west"].version_error == "auth"
    e.apply_result(us.check(True, T0 + 20, "3.7.9"), T0 + 20)
    assert state(e).regions["us-east"].version_error is None


def test_duplicates_and_older_results_change_nothing() -> None:
    """The same seq twice, or an older seq, is ignored."""
    e = engine()
    a = RegionProbe("us-east")
    first, second = a.check(False, T0), a.check(False, T0 + 10)
    assert e.apply_result(first, T0) is Applied.APPLIED
    assert e.apply_result(second, T0) is Applied.APPLIED
    assert e.apply_result(second, T0) is Applied.DUPLICATE
    assert e.apply_result(first, T0) is Applied.OLDER
    assert state(e).regions["us-east"].seq == 2


def test_probe_restart_is_followed_by_time() -> None:
    """A new boot restarts seq at 1; it is applied when newer, ignored when older."""
    e = engine()
    old = RegionProbe("us-east")
    for i in range(3):
        e.apply_result(old.check(False, T0 + 10 * i), T0 + 10 * i)
    assert state(e).regions["us-east"].failing
    new = RegionProbe("us-east", boot_id="c" * 32)
    assert e.apply_result(new.check(False, T0 - 5), T0) is Applied.OLDER
    restarted = new.check(False, T0 + 30)
    assert e.apply_result(restarted, T0 + 30) is Applied.APPLIED
    # The new process's streak starts at 1, but the region stays failing (no recoveries yet).
    assert state(e).regions["us-east"].failing


def test_interval_is_learned_from_seq() -> None:
    """The probe's interval is learned from consecutive results, for staleness."""
    e = engine()
    a = RegionProbe("us-east")
    e.apply_result(a.check(True, T0), T0)
    e.apply_result(a.check(True, T0 + 2), T0 + 2)
    assert state(e).regions["us-east"].interval == 2.0


@pytest.mark.parametrize("record_first", [True, False])
def test_restore_keeps_a_real_outage_through_a_restart(record_first: bool) -> None:
    """After a restart, retained results with cs < K plus the record keep the target down."""
    e = engine()
    probes = {r: RegionProbe(r) for r in REGIONS}
    latest = []
    for r in REGIONS:
        for i in range(3):
            probes[r].check(False, T0 + 10 * i)
        latest.append(probes[r].check(True, T0 + 30))  # one success: cs = 1 < K = 2
    record = StateRecord(
        target="api",
        verdict=Verdict.DOWN,
        since=T0 + 20,
        regions={r: RegionRecord(failing=True, failing_since=T0) for r in REGIONS},
        updated_at=T0 + 20,
    )
    if record_first:
        e.restore(record)
    for result in latest:
        e.apply_result(result, T0 + 31)
    if not record_first:
        e.restore(record)
    out = e.evaluate("api", T0 + 31)
    assert verdict(e) is Verdict.DOWN
    assert state(e).since == T0 + 20
    assert not [t for t in out if t.kind == "verdict"]
    assert state(e).regions["us-east"].failing_since == T0


@pytest.mark.parametrize("record_first", [True, False])
def test_restore_keeps_the_recorded_failing_since_over_an_estimate(record_first: bool) -> None:
    """The record's exact start of a streak wins over one estimated from a retained result.

    The estimate counts intervals back, off by the checks' lateness; in either order.
    """
    e = engine()
    probe = RegionProbe("us-east")
    first = probe.check(False, T0 + 0.01)  # the streak's first check started a little late
    for i in range(1, 5):
        latest = probe.check(False, T0 + 10 * i)
    record = StateRecord(
        target="api",
        verdict=Verdict.DEGRADED,
        since=T0 + 20,
        regions={"us-east": RegionRecord(failing=True, failing_since=first.started_at)},
        updated_at=T0 + 40,
    )
    if record_first:
        e.restore(record)
    e.apply_result(latest, T0 + 41)
    if not record_first:
        e.restore(record)
    assert state(e).regions["us-east"].failing_since == first.started_at


def test_restore_does_not_invent_an_outage() -> None:
    """A record saying down is overruled by retained results showing K successes."""
    e = engine()
    e.restore(
        StateRecord(
            target="api",
            verdict=Verdict.DOWN,
            since=T0,
            regions={r: RegionRecord(failing=True, failing_since=T0) for r in REGIONS},
            updated_at=T0,
        )
    )
    for r in REGIONS:
        p = RegionProbe(r)
        p.check(True, T0 + 10)
        e.apply_result(p.check(True, T0 + 20), T0 + 21)
    out = e.evaluate("api", T0 + 21)
    assert verdict(e) is Verdict.UP
    assert "verdict:down->up" in names(out)


def test_per_target_override() -> None:
    """A target may require more failures than the global rule."""
    from aggregator.config import AggregatorConfig, RuleOverride

    config = AggregatorConfig(regions=list(REGIONS), targets={"api": RuleOverride(failures=5)})
    e = Engine(config.regions, config.rule_for, default_interval=10, forget_after=3600)
    end = feed(e, dict.fromkeys(REGIONS, "FFFF"))
    e.evaluate("api", end)
    assert verdict(e) is Verdict.UNKNOWN  # 4 < 5 failures: not down, and no proof of up
    for r in REGIONS:
        e.apply_result(RegionProbe(r, seq=4, failures=4).check(False, end + 10), end + 10)
    e.evaluate("api", end + 10)
    assert verdict(e) is Verdict.DOWN


def test_two_of_three_regions() -> None:
    """With regions: 2, two failing regions are enough for down."""
    e = engine(Rule(regions=2))
    end = feed(e, {"us-east": "FFF", "eu-west": "FFF", "ap-southeast": "SSS"})
    e.evaluate("api", end)
    assert verdict(e) is Verdict.DOWN
    assert not state(e).quorum_degraded


def test_forget_drops_silent_targets() -> None:
    """A target nobody reported for forget_after is dropped."""
    e = engine(forget_after=100)
    feed(e, {"us-east": "S"})
    assert e.forget(T0 + 50) == []
    assert e.forget(T0 + 101) == ["api"]
    assert "api" not in e


def test_a_forgotten_target_ignores_its_old_results_and_returns_with_a_new_one() -> None:
    """Results from before the forget are old news; one that started after brings it back."""
    e = engine(forget_after=100)
    probe = RegionProbe("us-east")
    old = probe.check(True, T0)
    e.apply_result(old, T0)
    assert e.forget(T0 + 101) == ["api"]
    assert e.apply_result(old, T0 + 102) is Applied.FORGOTTEN
    assert "api" not in e
    assert e.apply_result(probe.check(True, T0 + 110), T0 + 110) is Applied.APPLIED
    assert "api" in e
    assert e.tombstone("api", T0 + 111, "agg") is None


def test_a_tombstone_drops_a_target_its_old_retained_results_brought_back() -> None:
    """After a restart the tombstone wins over retained results older than it, in any order."""
    probe = RegionProbe("us-east")
    old = probe.check(True, T0)
    forgetting = engine(forget_after=100)
    forgetting.apply_result(old, T0)
    forgetting.forget(T0 + 101)
    tombstone = forgetting.tombstone("api", T0 + 101, "agg")
    assert tombstone is not None
    assert tombstone.forgotten_at == T0 + 101
    # The retained result first, then the tombstone.
    e = engine(forget_after=100)
    e.apply_result(old, T0 + 500)
    e.restore(tombstone)
    assert "api" not in e
    assert e.targets_in("us-east") == 0
    # The tombstone first, then the retained result.
    e = engine(forget_after=100)
    e.restore(tombstone)
    assert e.apply_result(old, T0 + 500) is Applied.FORGOTTEN
    assert "api" not in e
    # A result newer than the tombstone keeps the target.
    e = engine(forget_after=100)
    e.apply_result(probe.check(True, T0 + 200), T0 + 500)
    e.restore(tombstone)
    assert "api" in e


def test_tombstones_expire() -> None:
    """A tombstone older than the given age is dropped and named, so it can be deleted."""
    e = engine(forget_after=100)
    e.apply_result(RegionProbe("us-east").check(True, T0), T0)
    e.forget(T0 + 101)
    assert e.expire_tombstones(T0 + 100, T0 + 200) == []
    assert e.expire_tombstones(T0 + 102, T0 + 200) == ["api"]
    assert e.tombstone("api", T0 + 103, "agg") is None


def test_a_tombstone_from_a_clock_ahead_never_hides_live_results() -> None:
    """A tombstone dated by a clock 2 h ahead never sets aside a live result.

    The aggregator's clock jumped, forgot everything, and was set right: a real outage is
    judged, and the future-dated tombstone expires.
    """
    e = engine(forget_after=100)
    probes = {r: RegionProbe(r) for r in REGIONS}
    for p in probes.values():
        e.apply_result(p.check(True, T0), T0)
    assert e.forget(T0 + 7200) == ["api"]
    for i in range(1, 4):
        for p in probes.values():
            at = T0 + 10 * i
            assert e.apply_result(p.check(False, at), at) is Applied.APPLIED
    e.evaluate("api", T0 + 30)
    assert verdict(e) is Verdict.DOWN
    e.forget(T0 + 7200)  # forgotten again by the same wrong clock
    assert e.expire_tombstones(T0 + 40 - 86400, T0 + 40) == ["api"]


def test_an_online_probe_listing_the_target_clears_its_tombstone() -> None:
    """A probe that comes online checking a forgotten target brings it back at once."""
    e = engine(forget_after=100)
    probe = RegionProbe("us-east")
    old = probe.check(True, T0)
    e.apply_result(old, T0)
    e.forget(T0 + 101)
    e.apply_presence(online("us-east", at=T0 + 102), T0 + 102)
    assert e.tombstone("api", T0 + 103, "agg") is None
    assert e.apply_result(old, T0 + 103) is not Applied.FORGOTTEN


def test_tombstones_are_capped_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_TOMBSTONES the oldest go (named, so their retained records are deleted)."""
    monkeypatch.setattr(rules, "MAX_TOMBSTONES", 2)
    e = engine(forget_after=100)
    for i, name in enumerate(("a", "b", "c")):
        e.apply_result(RegionProbe("us-east", target=name).check(True, T0 + i), T0 + i)
        e.forget(T0 + 101 + i)
    assert e.expire_tombstones(T0, T0 + 200) == ["a"]
    assert e.tombstone("b", T0 + 200, "agg") is not None
