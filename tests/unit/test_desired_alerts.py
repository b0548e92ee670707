"""Alerts kept per target: one result re-judges one target, and agrees with a full rebuild."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from aggregator.app import build
from aggregator.config import AggregatorConfig
from aggregator.core.alerts import Alert, AlertSettings, DesiredAlerts, desired_alerts
from aggregator.core.rules import Engine
from tests.rulekit import REGIONS, T0, RegionProbe, engine
from wire.topics import result_topic


def of(alerts: dict[str, Alert], target: str, keep: bool = True) -> dict[str, Alert]:
    return {fp: a for fp, a in alerts.items() if (a.labels.get("target") == target) is keep}


def test_refreshing_the_changed_target_agrees_with_a_full_rebuild() -> None:
    """Re-judging one target gives its alerts as a full rebuild would, and keeps the others."""
    rng = random.Random(7)
    e: Engine = engine()
    probes = {(t, r): RegionProbe(r, target=t) for t in ("a", "b", "c", "d") for r in REGIONS}
    desired = DesiredAlerts(AlertSettings())
    seen: set[str] = set()
    for step in range(400):
        now = T0 + step
        (target, _region), probe = rng.choice(sorted(probes.items()))
        # Mostly failing, so outages come and go: down, degraded and recovering states.
        e.apply_result(probe.check(rng.random() < 0.35, now), now)
        e.evaluate(target, now)
        before = desired.current()
        desired.refresh_targets(e, [target], now)
        after = desired.current()
        full = desired_alerts(e, now, AlertSettings())
        assert of(after, target) == of(full, target)
        # Everyone else's alerts wait for the tick (which rebuilds all): untouched here.
        assert of(after, target, keep=False) == of(before, target, keep=False)
        seen.update(a.labels["alertname"] for a in full.values())
        if step % 10 == 0:  # the tick
            desired.refresh(e, now)
            assert desired.current() == full
    # The walk went through the states that matter, not only "all up".
    assert {"ServiceDown", "ServiceRegionDown"} <= seen


def test_a_forgotten_target_loses_its_alerts() -> None:
    e: Engine = engine()
    probes = [RegionProbe(r, target="gone") for r in REGIONS]
    for i in range(3):
        for p in probes:
            e.apply_result(p.check(False, T0 + i), T0 + i)
        e.evaluate("gone", T0 + i)
    desired = DesiredAlerts(AlertSettings())
    desired.refresh(e, T0 + 3)
    assert [a.labels["target"] for a in desired.current().values()] == ["gone"]
    assert e.forget(T0 + 10_000) == ["gone"]
    desired.refresh_targets(e, ["gone"], T0 + 10_000)
    assert desired.current() == {}


def test_a_result_that_changes_a_verdict_does_not_rebuild_every_targets_alerts() -> None:
    """The per-message path must not walk all targets: a backlog drain would be quadratic."""
    now = [T0]
    agg = build(
        AggregatorConfig(regions=list(REGIONS), startup_grace=1),
        CollectorRegistry(),
        None,
        clock=lambda: now[0],
        send_alerts=lambda _payloads: None,
    )
    probes = [RegionProbe(r, target=f"t{i}") for i in range(200) for r in REGIONS]
    for p in probes:
        agg.pipeline.handle(result_topic(p.region, p.target), p.check(True, T0).to_json(), False)
    agg.pipeline.tick(subscribed=True)
    now[0] = T0 + 2
    agg.pipeline.tick(subscribed=True)
    assert agg.readiness.loaded
    walks = []
    real = agg.engine.snapshots

    def counting():  # type: ignore[no-untyped-def]
        walks.append(1)
        return real()

    agg.engine.snapshots = counting  # type: ignore[method-assign]
    # Three failures in each region take t0 down: transitions on several messages.
    for k in range(1, 4):
        now[0] = T0 + 2 + k
        for p in probes[:3]:
            agg.pipeline.handle(
                result_topic(p.region, p.target), p.check(False, now[0]).to_json(), False
            )
    assert [a.labels["alertname"] for a, *_ in agg.alert_book.active()] == ["ServiceDown"]
    assert walks == []
