"""Invariants of the rule engine, checked on generated histories (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.config import Rule
from aggregator.core.rules import Engine, Transition, Verdict
from tests.rulekit import REGIONS, T0, RegionProbe, engine, state
from wire.result import ProbeResult

rules = st.builds(
    Rule,
    failures=st.integers(1, 4),
    regions=st.integers(1, 3),
    recoveries=st.integers(1, 3),
    min_regions=st.integers(1, 3),
)
# Per region: the outcomes of its checks (True = ok), possibly none at all.
histories = st.fixed_dictionaries({r: st.lists(st.booleans(), max_size=12) for r in REGIONS})
# How many seconds before "now" each region's last check ran (40 s and more is stale).
lags = st.fixed_dictionaries({r: st.sampled_from([0.0, 5.0, 40.0, 100.0]) for r in REGIONS})


def streams(
    history: dict[str, list[bool]], lag: dict[str, float], now: float
) -> dict[str, list[ProbeResult]]:
    out = {}
    for region, oks in history.items():
        probe = RegionProbe(region)
        end = now - lag[region]
        out[region] = [probe.check(ok, end - 10.0 * (len(oks) - 1 - i)) for i, ok in enumerate(oks)]
    return out


def final(e: Engine) -> tuple[Verdict, frozenset[str], bool, dict[str, tuple[int, bool]]]:
    st = state(e)
    views = {r: (v.seq, v.failing) for r, v in st.regions.items()}
    return st.verdict, st.failing, st.quorum_degraded, views


def replayed(
    rule: Rule, sequence: list[ProbeResult], now: float
) -> tuple[Verdict, frozenset[str], bool, dict[str, tuple[int, bool]]]:
    """The final state of a fresh engine fed `sequence`, then judged at `now`."""
    e = engine(rule)
    for r in sequence:
        e.apply_result(r, now)
    e.evaluate("api", now)
    return final(e)


@settings(max_examples=300, deadline=None)
@given(rule=rules, history=histories, lag=lags)
def test_down_needs_the_quorum(
    rule: Rule, history: dict[str, list[bool]], lag: dict[str, float]
) -> None:
    """`down` never holds with fewer than M failing regions, outside a degraded quorum."""
    now = T0 + 1000
    e = engine(rule)
    for results in streams(history, lag, now).values():
        for r in results:
            e.apply_result(r, now)
    if "api" not in e:
        return
    e.evaluate("api", now)
    st = state(e)
    ev = st.evaluation
    assert ev is not None
    assert ev.failing <= ev.fresh
    if st.verdict is Verdict.DOWN and len(ev.failing) < rule.regions:
        assert st.quorum_degraded
        assert ev.stale or ev.pending
        assert ev.failing == ev.fresh
        assert len(ev.fresh) >= rule.min_regions
    if st.verdict is Verdict.DEGRADED:
        assert ev.failing
    if st.verdict is Verdict.UP:
        assert not ev.failing
        assert len(ev.fresh) >= rule.min_regions


@settings(max_examples=200, deadline=None)
@given(rule=rules, history=histories, order=st.randoms(use_true_random=False))
def test_arrival_order_across_regions_does_not_matter(
    rule: Rule, history: dict[str, list[bool]], order: object
) -> None:
    """Interleaving the regions' results differently gives the same verdict."""
    import random

    assert isinstance(order, random.Random)
    now = T0 + 1000
    per_region = streams(history, dict.fromkeys(REGIONS, 0.0), now)
    if not any(per_region.values()):
        return
    in_order = [r for region in REGIONS for r in per_region[region]]
    # A random interleaving that keeps each region's own order.
    queues = {region: list(results) for region, results in per_region.items()}
    shuffled: list[ProbeResult] = []
    while any(queues.values()):
        region = order.choice([r for r, q in queues.items() if q])
        shuffled.append(queues[region].pop(0))
    assert replayed(rule, in_order, now) == replayed(rule, shuffled, now)


@settings(max_examples=200, deadline=None)
@given(
    rule=rules,
    history=histories,
    noise=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=30),
)
def test_duplicates_and_late_redeliveries_change_nothing(
    rule: Rule, history: dict[str, list[bool]], noise: list[tuple[int, int]]
) -> None:
    """Re-delivering results already seen, at any later point, leaves the same state."""
    now = T0 + 1000
    clean = [
        r
        for results in streams(history, dict.fromkeys(REGIONS, 0.0), now).values()
        for r in results
    ]
    if not clean:
        return
    noisy = list(clean)
    for at, which in noise:
        position = at % (len(noisy) + 1)
        seen_before = list(noisy[:position])
        if seen_before:
            noisy.insert(position, seen_before[which % len(seen_before)])
    assert replayed(rule, clean, now) == replayed(rule, noisy, now)


def changes(transitions: list[Transition]) -> list[tuple[str, str | None, str, str, float]]:
    return [(t.kind.value, t.region, t.old, t.new, t.since) for t in transitions]


# One step of a live stream: which region reports, whether its check passed, the seconds
# since the previous step, and whether its version changes.
steps = st.lists(
    st.tuples(
        st.sampled_from(REGIONS),
        st.booleans(),
        st.sampled_from([0.5, 3.0, 10.0, 35.0]),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


@given(rule=rules, walk=steps)
@settings(max_examples=300, deadline=None)
def test_a_result_that_needs_no_evaluation_adds_nothing_to_one(
    rule: Rule, walk: list[tuple[str, bool, float, bool]]
) -> None:
    """Skipping `evaluate` for a routine result loses no transition it would have caused.

    When `needs_evaluation` says no, judging the target with the result gives exactly what
    judging it without the result gives at the same moment: whatever changed came from the
    clock (which the tick judges), not from the result.
    """
    import copy

    e = engine(rule)
    probes = {r: RegionProbe(r) for r in REGIONS}
    now = T0
    versions = dict.fromkeys(REGIONS, "1.0")
    for region, ok, gap, bump in walk:
        now += gap
        if bump:
            versions[region] = "2.0" if versions[region] == "1.0" else "1.0"
        before = copy.deepcopy(e)
        e.apply_result(probes[region].check(ok, now, version=versions[region]), now)
        if not e.needs_evaluation("api"):
            # The same changes (the evidence attached says more: this result's streak).
            assert changes(e.evaluate("api", now)) == changes(before.evaluate("api", now))
            assert final(e)[:3] == final(before)[:3]
            assert state(e).skew_since == state(before).skew_since
        else:
            e.evaluate("api", now)
