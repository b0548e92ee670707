"""The engine's caps on targets, per region and in all, through forget(); the skew series cap."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from aggregator.app import build
from aggregator.config import AggregatorConfig
from aggregator.core.rules import Applied, Engine
from tests.rulekit import REGIONS, T0, RegionProbe, online
from wire.topics import result_topic


def capped(max_targets: int, per_region: int) -> Engine:
    config = AggregatorConfig(regions=list(REGIONS))
    return Engine(
        config.regions,
        config.rule_for,
        default_interval=10.0,
        forget_after=60.0,
        max_targets=max_targets,
        max_targets_per_region=per_region,
    )


def test_a_region_fills_its_share_and_no_more() -> None:
    """One region's flood stops at its share; other regions still add and report targets."""
    e = capped(max_targets=10, per_region=4)
    outcomes = [
        e.apply_result(RegionProbe("us-east", target=f"bogus-{i}").check(False, T0), T0)
        for i in range(6)
    ]
    assert outcomes.count(Applied.REFUSED) == 2
    assert e.refused["us-east"] == 2
    assert e.targets_in("us-east") == 4
    # The targets it already has still take its results.
    again = RegionProbe("us-east", target="bogus-0", seq=1).check(False, T0 + 1)
    assert e.apply_result(again, T0 + 1) is Applied.APPLIED
    # Another region reports one of those and a new one: both fit.
    assert e.apply_result(RegionProbe("eu-west", target="bogus-1").check(True, T0), T0)
    assert e.apply_result(RegionProbe("eu-west", target="api").check(True, T0), T0)
    assert len(e) == 5
    assert e.targets_in("eu-west") == 2


def test_the_total_cap_holds_across_regions_and_presence() -> None:
    """Past max_targets nothing new is admitted, whichever region and whatever the message."""
    e = capped(max_targets=3, per_region=100)
    e.apply_presence(online("us-east", [f"t{i}" for i in range(5)], boot_id="c" * 32), T0)
    assert len(e) == 3
    assert e.refused["us-east"] == 2
    assert e.apply_result(RegionProbe("eu-west", target="new").check(True, T0), T0) is (
        Applied.REFUSED
    )
    assert e.apply_result(RegionProbe("eu-west", target="t0").check(True, T0), T0) is (
        Applied.APPLIED
    )


def test_forget_gives_the_room_back() -> None:
    """Targets forgotten after forget_after free their region's and the total's slots."""
    e = capped(max_targets=4, per_region=2)
    for name in ("a", "b"):
        e.apply_result(RegionProbe("us-east", target=name).check(True, T0), T0)
    assert e.apply_result(RegionProbe("us-east", target="c").check(True, T0), T0) is (
        Applied.REFUSED
    )
    assert sorted(e.forget(T0 + 61)) == ["a", "b"]
    assert e.targets_in("us-east") == 0
    assert e.apply_result(RegionProbe("us-east", target="c").check(True, T0), T0 + 62) is (
        Applied.APPLIED
    )


def test_per_region_counts_match_a_recount_under_random_traffic() -> None:
    """Results, presence and forget in any order: the counts equal what the engine holds."""
    rng = random.Random(11)
    e = capped(max_targets=30, per_region=12)
    now = T0
    for _ in range(400):
        now += rng.random() * 5
        region = rng.choice(REGIONS)
        op = rng.random()
        if op < 0.6:
            probe = RegionProbe(region, target=f"t{rng.randrange(40)}", seq=rng.randrange(9))
            e.apply_result(probe.check(rng.random() < 0.5, now), now)
        elif op < 0.9:
            names = [f"t{rng.randrange(40)}" for _ in range(rng.randrange(6))]
            e.apply_presence(online(region, names, now, boot_id="c" * 32), now)
        else:
            e.forget(now)
        assert len(e) <= 30
        for r in REGIONS:
            held = sum(
                1 for s in e.snapshots() if r in s.regions or r in e._targets[s.name].expected
            )
            assert e.targets_in(r) == held <= 12


def test_clock_skew_series_stay_bounded_and_new_probes_get_one() -> None:
    """Probe ids past max_probes_per_region push out the least recently heard one."""
    config = AggregatorConfig.model_validate(
        {"regions": list(REGIONS), "limits": {"max_probes_per_region": 3}}
    )
    now = T0
    registry = CollectorRegistry()
    agg = build(config, registry, None, clock=lambda: now)
    agg.pipeline.set_connected(True)
    for i in range(6):
        now += 1
        r = RegionProbe("us-east", target="api", probe_id=f"p{i}").check(True, now)
        agg.pipeline.handle(result_topic("us-east", "api"), r.to_json(), False)
    ids = {
        s.labels["probe_id"]
        for m in registry.collect()
        if m.name == "vigil_probe_clock_skew_seconds"
        for s in m.samples
    }
    assert ids == {"p3", "p4", "p5"}
