"""A verdict's `since` (ServiceDown's startsAt) comes from the results, not from their arrival."""

from __future__ import annotations

import pytest

from aggregator.config import Rule
from aggregator.core.alerts import AlertSettings, desired_alerts
from aggregator.core.rules import Change, Engine, Transition
from tests.rulekit import REGIONS, T0, RegionProbe, engine, state, verdict
from wire.state import RegionRecord, StateRecord, Verdict

INTERVAL = 10.0


def run(
    e: Engine,
    plan: dict[str, list[tuple[bool, float]]],
    delays: dict[str, float],
    probes: dict[str, RegionProbe] | None = None,
) -> list[Transition]:
    """Feed each region's (ok, started_at) checks, each arriving `delays[region]` later.

    In the order they started, as every subscriber of one broker hears them: a lagging
    aggregator hears the same sequence, later (never earlier than the message before).
    """
    probes = probes if probes is not None else {}
    checks = sorted((at, region, ok) for region, runs in plan.items() for ok, at in runs)
    out: list[Transition] = []
    now = 0.0
    for at, region, ok in checks:
        now = max(now, at + delays.get(region, 0.0))
        probe = probes.setdefault(region, RegionProbe(region, successes=1))
        e.apply_result(probe.check(ok, at), now)
        out += e.evaluate("api", now)
    return out


def failing_from(start: float, count: int = 4) -> list[tuple[bool, float]]:
    """Two successes (the region was up), then `count` failures every INTERVAL from `start`."""
    ups = [(True, start - 2 * INTERVAL), (True, start - INTERVAL)]
    return ups + [(False, start + i * INTERVAL) for i in range(count)]


def down_since(out: list[Transition]) -> float:
    [down] = [t for t in out if t.kind is Change.VERDICT and t.new == "down"]
    return down.since


# Region offsets of the first failure; the region turns failing at its third (offset + 20).
OFFSETS = {"us-east": 0.0, "eu-west": 3.0, "ap-southeast": 7.0}
# The same results heard by two aggregators: one at once, one late and out of order.
PROMPT: dict[str, float] = {}
LATE = {"us-east": 4.5, "eu-west": 0.2, "ap-southeast": 2.0}


@pytest.mark.parametrize("delays", [PROMPT, LATE], ids=["prompt", "late"])
@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # 3 of 3: the quorum was reached when the last region turned failing.
        pytest.param(Rule(), T0 + 7 + 20, id="3-of-3"),
        # 2 of 3: the second region to turn failing reached it.
        pytest.param(Rule(regions=2), T0 + 3 + 20, id="2-of-3"),
        pytest.param(Rule(regions=1, min_regions=1), T0 + 20, id="1-of-3"),
    ],
)
def test_down_since_is_when_the_results_reached_the_quorum(
    rule: Rule, expected: float, delays: dict[str, float]
) -> None:
    """Down dates from the `regions`-th region to turn failing, however late each arrived."""
    e = engine(rule)
    plan = {r: failing_from(T0 + OFFSETS[r]) for r in REGIONS}
    out = run(e, plan, delays)
    assert verdict(e) is Verdict.DOWN
    assert down_since(out) == expected
    assert state(e).since == expected


def test_degraded_quorum_dates_from_the_last_fresh_region_to_fail() -> None:
    """With one region silent, down on a degraded quorum starts when every fresh one failed."""
    e = engine()
    plan = {r: failing_from(T0 + OFFSETS[r]) for r in ("us-east", "eu-west")}
    out = run(e, plan, LATE)
    assert verdict(e) is Verdict.DOWN
    assert state(e).quorum_degraded
    assert down_since(out) == T0 + 3 + 20


def test_a_probe_clock_ahead_never_dates_a_verdict_in_the_future() -> None:
    """A result stamped after its arrival gives `since` = the arrival, never later."""
    e = engine(Rule(regions=1, min_regions=1))
    probe = RegionProbe("us-east", successes=1)
    for i in range(3):
        at = T0 + i * INTERVAL
        e.apply_result(probe.check(False, at + 5.0), at)  # stamped 5 s ahead of arrival
        out = e.evaluate("api", at)
    assert down_since(out) == T0 + 2 * INTERVAL


def test_an_aggregator_that_missed_the_start_counts_back_by_the_streak() -> None:
    """Seeing only a 5th failure, the region turned failing two intervals before it started."""
    e = engine(Rule(regions=1, min_regions=1))
    probe = RegionProbe("us-east", failures=4, interval=INTERVAL)
    result = probe.check(False, T0)
    result = result.model_copy(update={"interval": INTERVAL})
    e.apply_result(result, T0 + 1)
    out = e.evaluate("api", T0 + 1)
    assert down_since(out) == T0 - 2 * INTERVAL


@pytest.mark.parametrize("delays", [PROMPT, LATE], ids=["prompt", "late"])
def test_degraded_dates_from_the_first_region_to_fail(delays: dict[str, float]) -> None:
    """Up to degraded: since the first failing region turned failing."""
    e = engine()
    plan = {r: failing_from(T0 + OFFSETS[r]) for r in ("us-east", "eu-west")}
    plan["ap-southeast"] = [(True, T0 + i * INTERVAL) for i in range(-2, 4)]
    run(e, plan, delays)
    assert verdict(e) is Verdict.DEGRADED
    assert state(e).since == T0 + 20


@pytest.mark.parametrize("delays", [PROMPT, LATE], ids=["prompt", "late"])
def test_leaving_down_dates_from_the_last_region_to_recover(delays: dict[str, float]) -> None:
    """Down to up: since the check that made the last failing region recover."""
    e = engine()
    probes: dict[str, RegionProbe] = {}
    run(e, {r: failing_from(T0 + OFFSETS[r], count=10) for r in REGIONS}, delays, probes)
    heal = T0 + 100  # the next check after the last failure: no region goes stale
    plan = {r: [(True, heal + OFFSETS[r]), (True, heal + OFFSETS[r] + INTERVAL)] for r in REGIONS}
    out = run(e, plan, delays, probes)
    assert verdict(e) is Verdict.UP
    assert [t.new for t in out if t.kind is Change.VERDICT] == ["degraded", "up"]
    # K = 2: each region recovers at its second success; ap-southeast is last.
    assert state(e).since == heal + 7 + INTERVAL


def test_a_restored_since_is_kept_through_the_outage() -> None:
    """After a restart, an outage in progress keeps the since its record carried."""
    e = engine()
    record = StateRecord(
        target="api",
        verdict=Verdict.DOWN,
        since=T0 - 300,
        regions={r: RegionRecord(failing=True, failing_since=T0 - 320) for r in REGIONS},
        updated_at=T0 - 5,
    )
    e.restore(record)
    probes = {r: RegionProbe(r, failures=30) for r in REGIONS}
    # The warm-up: retained results first, then the first judgement.
    for r, probe in probes.items():
        e.apply_result(probe.check(False, T0), T0 + LATE[r])
    out = e.evaluate("api", T0 + 5)
    out += run(e, {r: [(False, T0 + INTERVAL)] for r in REGIONS}, LATE, probes)
    assert [t for t in out if t.kind is Change.VERDICT] == []
    assert verdict(e) is Verdict.DOWN
    assert state(e).since == T0 - 300


def test_two_aggregators_with_different_arrival_agree_exactly() -> None:
    """The HA pair: same results, different arrival times and orders, one since per verdict."""
    timelines = []
    for delays in (PROMPT, LATE, {r: 0.05 * i for i, r in enumerate(REGIONS)}):
        e = engine()
        out = run(e, {r: failing_from(T0 + OFFSETS[r], count=6) for r in REGIONS}, delays)
        # The first judgement (unknown -> up) is this aggregator's own: no result dates it.
        timelines.append(
            [
                (t.old, t.new, t.since)
                for t in out
                if t.kind is Change.VERDICT and t.old != "unknown"
            ]
        )
    assert timelines[0] == timelines[1] == timelines[2]
    assert timelines[0][-1] == ("degraded", "down", T0 + 27)


@pytest.mark.parametrize("delays", [PROMPT, LATE], ids=["prompt", "late"])
def test_probe_offline_dates_from_when_the_region_was_last_heard(delays: dict[str, float]) -> None:
    """A silent region's ProbeOffline starts when its last result ended, however late heard."""
    e = engine()
    plan = {r: [(True, T0 + i * INTERVAL) for i in range(-2, 3)] for r in REGIONS}
    plan["us-east"] = plan["us-east"][:3]  # silent after its check at T0
    run(e, plan, delays)
    later = T0 + 45  # us-east silent 45 s (stale after 30), the others 25 s
    e.evaluate_all(later)
    alerts = desired_alerts(e, later, AlertSettings())
    [offline] = [a for a in alerts.values() if a.labels["alertname"] == "ProbeOffline"]
    assert offline.labels["region"] == "us-east"
    assert offline.starts_at == T0 + 12.0 / 1000  # started at T0, took 12 ms
