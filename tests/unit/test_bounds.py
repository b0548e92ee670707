"""Absurd numbers stop at the wire, and time arithmetic on what passes can never raise."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from aggregator.app import build
from aggregator.config import AggregatorConfig
from aggregator.core.alerts import AlertBook, AlertSettings, desired_alerts
from probe.verdict import Streak
from runtime.clock import rfc3339, utc_clock
from tests.rulekit import REGIONS, T0, RegionProbe, engine
from wire.result import MAX_STREAK, ProbeResult
from wire.state import StateRecord
from wire.topics import result_topic


def failed(failures: int) -> dict[str, object]:
    doc = RegionProbe("us-east").check(False, T0).model_dump(by_alias=True)
    doc["consecutive_failures"] = failures
    return doc


@pytest.mark.parametrize("failures", [MAX_STREAK + 1, 10**12, 10**400])
def test_an_absurd_streak_is_refused_by_the_wire_model(failures: int) -> None:
    """A streak beyond the bound is a validation error, never a number to compute with."""
    with pytest.raises(ValidationError):
        ProbeResult.model_validate(failed(failures))


def test_the_probe_streak_saturates_at_the_bound() -> None:
    """The probe stops counting at the wire's bound, so its results stay publishable."""
    streak = Streak(MAX_STREAK - 1, 0).after(False).after(False)
    assert streak.failures == MAX_STREAK
    assert Streak(0, MAX_STREAK).after(True).successes == MAX_STREAK


@pytest.mark.parametrize("ts", [-1e18, -1.0, 0.0, T0, 1e15, 1e300, math.inf, -math.inf, math.nan])
def test_formatting_a_time_never_raises(ts: float) -> None:
    """Any float formats as a valid RFC 3339 time and clock, clamped into datetime's range."""
    text = rfc3339(ts)
    assert text.endswith("Z")
    assert 1970 <= int(text[:4]) <= 9999
    assert utc_clock(ts) == "-" if ts == 0 else utc_clock(ts).endswith("Z")


def test_the_longest_streak_gives_a_recent_failing_since_and_valid_records() -> None:
    """A maximal streak at a day's interval puts "failing since" at most a year back."""
    e = engine()
    for region in REGIONS:
        doc = failed(MAX_STREAK)
        doc.update(region=region, probe_id=f"{region}-1")
        e.apply_result(ProbeResult.model_validate(doc), T0)
    e.evaluate("api", T0)
    snapshot = e.snapshot("api")
    assert snapshot is not None
    for view in snapshot.regions.values():
        assert view.failing_since is not None
        assert T0 - 366 * 86400 <= view.failing_since <= T0
    record = e.record("api", T0, "agg")
    assert record is not None
    assert StateRecord.from_json(record.to_json()) == record
    payloads = AlertBook(60.0).update(desired_alerts(e, T0, AlertSettings()), T0)
    assert [p["labels"]["alertname"] for p in payloads] == ["ServiceDown"]


def test_a_poisoned_target_does_not_silence_another_targets_outage() -> None:
    """After the largest valid streak on one target, another target's outage still fires."""
    now = [T0]
    registry = CollectorRegistry()
    agg = build(
        AggregatorConfig(regions=list(REGIONS), startup_grace=2),
        registry,
        None,
        clock=lambda: now[0],
    )
    pipeline = agg.pipeline
    pipeline.set_connected(True)
    pipeline.tick(subscribed=True)
    now[0] += 3
    pipeline.tick(subscribed=True)
    poison = failed(MAX_STREAK)
    pipeline.handle(
        result_topic("us-east", "api"), ProbeResult.model_validate(poison).to_json(), False
    )
    probes = [RegionProbe(r, target="web") for r in REGIONS]
    for _ in range(3):
        now[0] += 10
        for p in probes:
            pipeline.handle(result_topic(p.region, "web"), p.check(False, now[0]).to_json(), False)
        pipeline.tick(subscribed=True)
    firing = registry.get_sample_value("vigil_alerts_firing", {"alertname": "ServiceDown"})
    assert firing == 1
    assert registry.get_sample_value("vigil_target_up", {"target": "web"}) == 0
