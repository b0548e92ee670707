"""The clock tick in slices: the event loop (and a deciding result) never waits a whole tick."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig
from aggregator.core.pipeline import TICK_SLICE
from aggregator.core.rules import Verdict
from tests.rulekit import REGIONS, T0, RegionProbe
from wire.topics import result_topic


def loaded(targets: int, now: list[float], sent: list[dict[str, object]]) -> Aggregator:
    agg = build(
        AggregatorConfig(regions=list(REGIONS), startup_grace=1),
        CollectorRegistry(),
        None,
        clock=lambda: now[0],
        send_alerts=sent.extend,
    )
    for i in range(targets):
        for region in REGIONS:
            p = RegionProbe(region, target=f"t{i}")
            agg.pipeline.handle(result_topic(region, p.target), p.check(True, T0).to_json(), False)
    agg.pipeline.tick(subscribed=True)
    now[0] = T0 + 2
    agg.pipeline.tick(subscribed=True)
    assert agg.readiness.loaded
    return agg


def test_a_tick_over_many_targets_yields_between_slices() -> None:
    now: list[float] = [T0]
    sent: list[dict[str, object]] = []
    agg = loaded(2 * TICK_SLICE + 1, now, sent)
    now[0] = T0 + 3
    assert sum(1 for _ in agg.pipeline.tick_slices(subscribed=True)) == 2


def test_a_deciding_result_between_slices_pages_before_the_tick_ends() -> None:
    """Results handled while a tick is half done are judged and alerted at once."""
    now: list[float] = [T0]
    sent: list[dict[str, object]] = []
    agg = loaded(2 * TICK_SLICE, now, sent)
    probes = [RegionProbe(r, target="t0", seq=1, successes=1) for r in REGIONS]
    now[0] = T0 + 3
    slices = agg.pipeline.tick_slices(subscribed=True)
    next(slices)  # the first slice is judged; the loop would run now
    for k in range(3):
        for p in probes:
            result = p.check(False, T0 + 3 + k)
            agg.pipeline.handle(result_topic(p.region, "t0"), result.to_json(), False)
    snapshot = agg.engine.snapshot("t0")
    assert snapshot is not None
    assert snapshot.verdict is Verdict.DOWN
    # Sent at once (first on the quorum then known, again when the last region completes).
    assert sent
    assert {a["labels"]["alertname"] for a in sent} == {"ServiceDown"}  # type: ignore[index]
    # The first went out on a quorum degraded by a region still gathering evidence: said so.
    first = sent[0]["annotations"]["summary"]  # type: ignore[index]
    assert first.endswith("(degraded quorum: ap-southeast not judged yet)")
    before = len(sent)
    for _ in slices:  # the rest of the tick has nothing new to say about it
        pass
    assert len(sent) == before


def test_the_sliced_tick_judges_what_the_whole_tick_judges() -> None:
    """Staleness found by a sliced tick is the same as by a tick in one go."""
    results = []
    for sliced in (False, True):
        now: list[float] = [T0]
        sent: list[dict[str, object]] = []
        agg = loaded(2 * TICK_SLICE + 7, now, sent)
        now[0] = T0 + 120  # every region silent: stale everywhere
        if sliced:
            for _ in agg.pipeline.tick_slices(subscribed=True):
                pass
        else:
            agg.engine.evaluate_all(now[0])
            agg.pipeline.tick(subscribed=True)
        results.append(
            sorted((s.name, s.verdict.value) for s in agg.engine.snapshots()),
        )
    assert results[0] == results[1]
    assert {v for _, v in results[0]} == {"unknown"}
