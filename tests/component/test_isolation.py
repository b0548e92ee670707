"""One target that breaks the aggregator's code is counted and logged; the others go on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig, Rule
from aggregator.core.history import SeriesStore
from aggregator.edges.http import make_app
from aggregator.metrics import EngineCollector
from tests.rulekit import REGIONS, T0, RegionProbe, engine
from wire.topics import result_topic


class BreakingConfig(AggregatorConfig):
    """A config whose rule lookup raises for the target named in `broken`: a stand-in bug."""

    broken: set[str] = set()

    def rule_for(self, target: str) -> Rule:
        if target in BreakingConfig.broken:
            raise RuntimeError(f"planted bug for {target}")
        return super().rule_for(target)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def errors(registry: CollectorRegistry, stage: str) -> float:
    return registry.get_sample_value("vigil_evaluation_errors_total", {"stage": stage}) or 0.0


def service_down(sent: list[dict[str, Any]]) -> list[str]:
    """Targets of the ServiceDown alerts sent firing, in order, each once."""
    fired = [p["labels"]["target"] for p in sent if p["labels"]["alertname"] == "ServiceDown"]
    return list(dict.fromkeys(fired))


def outage(agg: Aggregator, clock: Clock, target: str, rounds: int = 3) -> None:
    probes = [RegionProbe(r, target=target) for r in REGIONS]
    for _ in range(rounds):
        clock.now += 10
        for p in probes:
            agg.pipeline.handle(
                result_topic(p.region, target), p.check(False, clock.now).to_json(), False
            )
        agg.pipeline.tick(subscribed=True)


async def test_a_broken_target_does_not_stop_another_targets_page() -> None:
    """With one target's judging broken, another's outage still fires and every surface answers."""
    BreakingConfig.broken = set()
    clock = Clock()
    registry = CollectorRegistry()
    sent: list[dict[str, Any]] = []
    config = BreakingConfig(regions=list(REGIONS), startup_grace=2)
    agg = build(config, registry, None, clock=clock, send_alerts=sent.extend)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 3
    agg.pipeline.tick(subscribed=True)
    outage(agg, clock, "bad")
    assert service_down(sent) == ["bad"]

    BreakingConfig.broken = {"bad"}
    try:
        outage(agg, clock, "web")
        assert service_down(sent) == ["bad", "web"]
        assert errors(registry, "evaluate") > 0
        assert errors(registry, "alerts") > 0
        async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as client:
            status = await client.get("/api/v1/status")
            assert status.status == 200
            shown = [t["target"] for t in (await status.json())["targets"]]
            assert shown == ["web"]
            assert (await client.get("/")).status == 200
            metrics = await client.get("/metrics")
            assert metrics.status == 200
            assert 'vigil_target_up{target="web"} 0.0' in await metrics.text()
        assert errors(registry, "views") > 0
    finally:
        BreakingConfig.broken = set()


class Exploding:
    """A target snapshot whose every field raises: a stand-in for a broken state object."""

    name = "boom"

    def __getattr__(self, _name: str) -> Any:
        raise RuntimeError("planted bug in a snapshot")


def test_a_broken_target_costs_its_own_series_not_the_scrape() -> None:
    """The collector reports one broken target to its callback and yields the others' series."""
    e = engine()
    for r in REGIONS:
        e.apply_result(RegionProbe(r, successes=1).check(True, T0), T0)
    e.evaluate("api", T0)
    real = e.snapshots

    def with_a_broken_one() -> Iterator[Any]:
        yield Exploding()
        yield from real()

    e.snapshots = with_a_broken_one  # type: ignore[method-assign]  # planting the bug
    failed: list[str] = []
    collector = EngineCollector(e, SeriesStore(), lambda t, _exc: failed.append(t))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert failed == ["boom"]
    assert samples[("vigil_target_up", (("target", "api"),))] == 1.0
