"""The aggregator in-process: messages in, verdicts, metrics, state records and HTTP out."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig
from aggregator.core.rules import PRESENCE_SETTLE_S, Verdict
from aggregator.edges.http import make_app
from runtime.clock import rfc3339
from tests.rulekit import BOOT, REGIONS, T0, RegionProbe, state
from wire.result import Presence
from wire.state import StateRecord
from wire.topics import presence_topic, result_topic, state_topic

# The default client_id names the subtree the records go to.
STATE_API = state_topic("vigil-aggregator", "api")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, registry: CollectorRegistry | None = None) -> tuple[Aggregator, list[str]]:
    """A connected aggregator; the list collects its transitions as `kind:old->new`."""
    seen: list[str] = []
    agg = build(
        AggregatorConfig(regions=list(REGIONS), startup_grace=5),
        registry or CollectorRegistry(),
        None,
        clock=clock,
        on_transitions=lambda ts: seen.extend(f"{t.kind}:{t.old}->{t.new}" for t in ts),
    )
    agg.pipeline.set_connected(True)
    return agg, seen


def published(agg: Aggregator, topic: str) -> bytes:
    payload = agg.outbox.latest(topic)
    assert payload is not None, f"nothing published on {topic}"
    return payload


def send(agg: Aggregator, probe: RegionProbe, ok: bool, at: float, retain: bool = False) -> None:
    agg.pipeline.handle(
        result_topic(probe.region, probe.target), probe.check(ok, at).to_json(), retain
    )


def outage(agg: Aggregator, clock: Clock) -> list[RegionProbe]:
    """Every region fails three times, 10 s apart; returns the probes, to go on with."""
    probes = [RegionProbe(r, successes=1) for r in REGIONS]
    for _ in range(3):
        clock.now += 10
        for p in probes:
            send(agg, p, False, clock.now)
    return probes


def warm_up(agg: Aggregator, clock: Clock) -> None:
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    assert agg.readiness.loaded


def test_outage_goes_down_and_is_recorded() -> None:
    """Three regions failing three times makes the target down, with metrics and a record."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, seen = make(clock, registry)
    warm_up(agg, clock)
    outage(agg, clock)
    assert state(agg.engine).verdict is Verdict.DOWN
    assert "verdict:degraded->down" in seen
    get = registry.get_sample_value
    assert get("vigil_target_up", {"target": "api"}) == 0
    assert get("vigil_target_verdict", {"target": "api", "verdict": "down"}) == 1
    assert get("vigil_region_failing", {"target": "api", "region": "eu-west"}) == 1
    assert get("vigil_consecutive_failures", {"target": "api", "region": "eu-west"}) == 3
    assert get("probe_success", {"target": "api", "region": "eu-west"}) == 0
    assert (
        get(
            "vigil_probe_results_total",
            {"target": "api", "region": "eu-west", "outcome": "http_status"},
        )
        == 3
    )
    assert (
        get(
            "vigil_probe_latency_seconds_bucket",
            {"target": "api", "region": "eu-west", "le": "0.02"},
        )
        == 3
    )
    assert (
        get(
            "vigil_probe_latency_seconds_bucket",
            {"target": "api", "region": "eu-west", "le": "0.01"},
        )
        == 0
    )
    assert get("vigil_results_received_total", {"region": "eu-west"}) == 3
    assert (
        get(
            "vigil_target_version_info", {"target": "api", "region": "eu-west", "version": "3.8.34"}
        )
        == 1
    )
    assert (
        get("vigil_last_result_timestamp_seconds", {"target": "api", "region": "eu-west"})
        == clock.now
    )
    record = StateRecord.from_json(published(agg, STATE_API))
    assert record.verdict is Verdict.DOWN
    assert all(r.failing for r in record.regions.values())


def test_hostile_messages_are_counted_not_fatal() -> None:
    """Garbage of every kind is counted by reason; valid results keep being judged."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    warm_up(agg, clock)
    garbage = [
        ("vigil/v1/results/us-east/api", b"\xff\xfe"),
        ("vigil/v1/results/us-east/api", b"{" * 70_000),
        ("vigil/v1/results/us-east/api", json.dumps({"schema": "evil/v1"}).encode()),
        ("vigil/v1/results/us-east/api/x/y", b"{}"),
        ("vigil/v1/probes/us-east/p", b"null"),
        (STATE_API, b"[1,2,3]"),
    ]
    for topic, payload in garbage * 50:
        agg.pipeline.handle(topic, payload, False)
    probes = [RegionProbe(r, successes=1) for r in REGIONS]
    for p in probes:
        send(agg, p, True, clock.now)
    get = registry.get_sample_value
    total = sum(
        get("vigil_results_rejected_total", {"reason": r}) or 0
        for r in ("invalid_json", "too_large", "schema", "topic", "invalid")
    )
    assert total == len(garbage) * 50
    assert get("vigil_results_rejected_total", {"reason": "too_large"}) == 50
    assert state(agg.engine).verdict is Verdict.UP


def test_duplicates_counted_as_ignored() -> None:
    """A redelivered result changes nothing and is counted as ignored."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    p = RegionProbe("us-east")
    result = p.check(False, clock.now).to_json()
    for _ in range(3):
        agg.pipeline.handle(result_topic("us-east", "api"), result, False)
    assert registry.get_sample_value("vigil_results_ignored_total", {"reason": "duplicate"}) == 2
    assert (
        registry.get_sample_value(
            "vigil_probe_results_total",
            {"target": "api", "region": "us-east", "outcome": "http_status"},
        )
        == 1
    )


def test_restart_during_outage_does_not_flap() -> None:
    """A new aggregator fed the retained results and record stays down, no transition."""
    clock = Clock()
    agg, _ = make(clock)
    warm_up(agg, clock)
    probes = outage(agg, clock)
    clock.now += 10
    for p in probes:
        send(agg, p, True, clock.now)  # one success each: still failing by hysteresis
    assert state(agg.engine).verdict is Verdict.DOWN
    since = state(agg.engine).since

    # The broker hands a restarted aggregator the retained state and the latest results.
    clock.now += 3
    fresh, seen = make(clock)
    fresh.pipeline.handle(STATE_API, published(agg, STATE_API), True)
    for p in probes:
        fresh.pipeline.handle(result_topic(p.region, "api"), p.history[-1].to_json(), True)
    assert not fresh.readiness.loaded
    warm_up(fresh, clock)
    assert state(fresh.engine).verdict is Verdict.DOWN
    assert state(fresh.engine).since == since
    assert not [s for s in seen if s.startswith("verdict")]


def test_presence_marks_region_offline() -> None:
    """An offline presence counts and shows in the region's staleness."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    warm_up(agg, clock)
    for r in REGIONS:
        send(agg, RegionProbe(r, successes=1), True, clock.now)
    presence = Presence(
        status="offline", probe_id="us-east-1", region="us-east", boot_id=BOOT, at=clock.now
    )
    agg.pipeline.handle(presence_topic("us-east", "us-east-1"), presence.to_json(), False)
    agg.pipeline.tick(subscribed=True)
    assert registry.get_sample_value("vigil_region_stale", {"region": "us-east"}) == 0
    clock.now += PRESENCE_SETTLE_S  # an offline counts once settled (not a broker shutdown)
    agg.pipeline.tick(subscribed=True)
    assert registry.get_sample_value("vigil_region_stale", {"region": "us-east"}) == 1
    assert registry.get_sample_value("vigil_region_stale", {"region": "eu-west"}) == 0


async def test_http_endpoints() -> None:
    """/healthz, /readyz (503 until loaded), /metrics and /api/v1/status answer."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    app = make_app(agg.http_deps())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/healthz")).status == 200
        not_ready = await client.get("/readyz")
        assert not_ready.status == 503
        assert "loading retained state" in (await not_ready.json())["reason"]
        warm_up(agg, clock)
        for r in REGIONS:
            send(agg, RegionProbe(r, successes=1), True, clock.now)
        assert (await client.get("/readyz")).status == 200
        metrics = await (await client.get("/metrics")).text()
        assert 'vigil_target_up{target="api"} 1.0' in metrics
        status = await (await client.get("/api/v1/status")).json()
    [target] = status["targets"]
    assert target["verdict"] == "up"
    assert [r["region"] for r in target["regions"]] == list(REGIONS)
    assert target["quorum"]["fresh"] == sorted(REGIONS)


def test_forgotten_target_series_disappear() -> None:
    """A target silent past forget_after loses its metric series."""
    clock = Clock()
    registry = CollectorRegistry()
    agg = build(
        AggregatorConfig(regions=list(REGIONS), forget_after=60), registry, None, clock=clock
    )
    warm_up(agg, clock)
    send(agg, RegionProbe("us-east"), True, clock.now)
    assert registry.get_sample_value("probe_success", {"target": "api", "region": "us-east"}) == 1
    clock.now += 120
    agg.pipeline.tick(subscribed=True)
    assert (
        registry.get_sample_value("probe_success", {"target": "api", "region": "us-east"}) is None
    )
    assert (
        registry.get_sample_value(
            "vigil_probe_results_total", {"target": "api", "region": "us-east", "outcome": "ok"}
        )
        is None
    )


def firing(registry: CollectorRegistry, alertname: str) -> float:
    return registry.get_sample_value("vigil_alerts_firing", {"alertname": alertname}) or 0.0


def test_nothing_is_judged_recorded_or_alerted_before_warm_up_ends() -> None:
    """Results folded in while loading change no verdict, record or alert until warm-up ends."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, seen = make(clock, registry)
    outage(agg, clock)
    assert not agg.readiness.loaded
    assert seen == []
    assert len(agg.outbox) == 0
    assert firing(registry, "ServiceDown") == 0
    warm_up(agg, clock)
    assert "verdict:unknown->down" in seen
    assert StateRecord.from_json(published(agg, STATE_API)).verdict is Verdict.DOWN
    assert firing(registry, "ServiceDown") == 1


def test_warm_up_republishes_every_targets_record() -> None:
    """When warm-up ends, each known target's state record is published as this process sees it."""
    clock = Clock()
    agg, _ = make(clock)
    for target in ("api", "web"):
        for r in REGIONS:
            send(agg, RegionProbe(r, target=target, successes=1), True, clock.now, retain=True)
    assert len(agg.outbox) == 0
    warm_up(agg, clock)
    for target in ("api", "web"):
        record = StateRecord.from_json(published(agg, state_topic("vigil-aggregator", target)))
        assert record.verdict is Verdict.UP
        assert record.aggregator == "vigil-aggregator"
        assert record.updated_at == clock.now


def test_a_region_going_stale_does_not_rewrite_the_state_record() -> None:
    """Staleness is not part of the record: a stale transition publishes no new record."""
    clock = Clock()
    agg, seen = make(clock)
    warm_up(agg, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    for p in probes.values():
        send(agg, p, True, clock.now)
    before = published(agg, STATE_API)
    for _ in range(5):  # us-east falls silent; the others keep reporting
        clock.now += 10
        for r in ("eu-west", "ap-southeast"):
            send(agg, probes[r], True, clock.now)
        agg.pipeline.tick(subscribed=True)
    assert "stale:fresh->stale" in seen
    assert state(agg.engine).verdict is Verdict.UP
    assert published(agg, STATE_API) == before


def test_a_verdict_changed_by_the_clock_alone_updates_alerts_at_the_tick() -> None:
    """When every probe falls silent, the next tick resolves ServiceDown and fires ProbeOffline."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, seen = make(clock, registry)
    warm_up(agg, clock)
    outage(agg, clock)
    assert firing(registry, "ServiceDown") == 1
    clock.now += 60  # no results at all: every region goes stale with time
    agg.pipeline.tick(subscribed=True)
    assert "verdict:down->unknown" in seen
    assert firing(registry, "ServiceDown") == 0
    assert firing(registry, "ProbeOffline") == len(REGIONS)


@pytest.mark.parametrize(
    ("events", "loaded"),
    [
        # (seconds after the first subscribed tick, what happens)
        ([(0.5, "live"), (1.0, "live"), (1.2, "tick")], True),  # live traffic is not backlog
        ([(0.5, "live"), (0.8, "tick")], False),  # too soon after subscribing
        ([(0.5, "retained"), (1.0, "retained"), (1.2, "tick")], False),  # still arriving
        ([(0.5, "retained"), (1.0, "retained"), (2.1, "tick")], True),  # quiet for a second
        ([(t / 2, "retained") for t in range(1, 10)] + [(4.9, "tick")], False),
        ([(t / 2, "retained") for t in range(1, 11)] + [(5.0, "tick")], True),  # startup_grace
        ([(10.0, "unsubscribed tick")], False),  # nothing ends warm-up before the SUBACKs
    ],
)
def test_warm_up_ends_when_retained_messages_stop(
    events: list[tuple[float, str]], loaded: bool
) -> None:
    """Warm-up ends a second after retained messages stop, or at startup_grace, once subscribed."""
    clock = Clock()
    agg, _ = make(clock)
    start = clock.now
    agg.pipeline.tick(subscribed=events[-1][1] != "unsubscribed tick")
    probe = RegionProbe("us-east")
    for offset, what in events:
        clock.now = start + offset
        if what in ("live", "retained"):
            send(agg, probe, True, clock.now, retain=what == "retained")
        else:
            agg.pipeline.tick(subscribed=what == "tick")
    assert agg.readiness.loaded is loaded


def test_a_result_from_long_ago_is_rejected_and_counted() -> None:
    """A result stamped more than max_result_age (1 d) ago is rejected as past_timestamp."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    warm_up(agg, clock)
    send(agg, RegionProbe("us-east"), True, clock.now - 2 * 86400)
    rejected = registry.get_sample_value(
        "vigil_results_rejected_total", {"reason": "past_timestamp"}
    )
    assert rejected == 1
    assert "api" not in agg.engine


def test_each_probes_clock_skew_is_measured_from_live_results_only() -> None:
    """A live result from a probe 2.5 s behind shows as +2.5 s skew; retained ones say nothing."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    warm_up(agg, clock)
    eu = RegionProbe("eu-west")
    late = eu.check(True, clock.now - 100)
    agg.pipeline.handle(result_topic("eu-west", "api"), late.to_json(), True)  # retained
    labels = {"region": "eu-west", "probe_id": "eu-west-1"}
    assert registry.get_sample_value("vigil_probe_clock_skew_seconds", labels) is None
    behind = eu.check(True, clock.now - 2.5 - 0.012)  # ends 2.5 s before it arrives
    agg.pipeline.handle(result_topic("eu-west", "api"), behind.to_json(), False)
    skew = registry.get_sample_value("vigil_probe_clock_skew_seconds", labels)
    assert skew is not None
    assert abs(skew - 2.5) < 1e-6


def test_an_outage_that_ended_while_the_aggregator_was_away_is_sent_resolved() -> None:
    """A restarted aggregator that finds a recorded outage healed sends ServiceDown resolved."""
    clock = Clock()
    agg, _ = make(clock)
    warm_up(agg, clock)
    probes = outage(agg, clock)
    record = published(agg, STATE_API)

    clock.now += 60  # the aggregator is away; the service heals meanwhile
    sent: list[dict[str, object]] = []
    fresh = build(
        AggregatorConfig(regions=list(REGIONS), startup_grace=5),
        CollectorRegistry(),
        None,
        clock=clock,
        send_alerts=sent.extend,
    )
    fresh.pipeline.set_connected(True)
    fresh.pipeline.handle(STATE_API, record, True)
    for p in probes:
        p.check(True, clock.now - 10)
        send(fresh, p, True, clock.now, retain=True)  # the retained latest: healed, K = 2
    warm_up(fresh, clock)
    resolved = [
        a
        for a in sent
        if a["labels"]["alertname"] == "ServiceDown"  # type: ignore[index]
        and str(a["endsAt"]) <= rfc3339(clock.now)
    ]
    assert len(resolved) == 1


async def test_the_api_shows_pending_regions_and_no_up_verdict_at_a_cold_start() -> None:
    """One failure per region after a start: every region pending, the target unknown."""
    clock = Clock()
    agg, _ = make(clock)
    warm_up(agg, clock)
    for r in REGIONS:
        send(agg, RegionProbe(r), False, clock.now)
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as client:
        status = await (await client.get("/api/v1/status")).json()
        explain = await (await client.get("/api/v1/targets/api/explain")).json()
    [target] = status["targets"]
    assert target["verdict"] == "unknown"
    assert [r["pending"] for r in target["regions"]] == [True, True, True]
    assert {r["counted_as"] for r in explain["regions"]} == {"pending"}


def forgetful(clock: Clock) -> Aggregator:
    """A connected aggregator that forgets a target silent for a minute."""
    agg = build(
        AggregatorConfig(regions=list(REGIONS), forget_after=60),
        CollectorRegistry(),
        None,
        clock=clock,
    )
    agg.pipeline.set_connected(True)
    return agg


@pytest.mark.parametrize("tombstone_first", [True, False])
def test_a_forgotten_target_stays_forgotten_after_a_restart(tombstone_first: bool) -> None:
    """A restarted aggregator reading the tombstone and an old result keeps the target gone.

    The forget leaves a retained tombstone; read back with the target's old retained result
    (in either order), it keeps the target from coming back.
    """
    clock = Clock()
    agg = forgetful(clock)
    warm_up(agg, clock)
    probe = RegionProbe("us-east")
    retained = probe.check(True, clock.now)
    agg.pipeline.handle(result_topic("us-east", "api"), retained.to_json(), False)
    clock.now += 120
    agg.pipeline.tick(subscribed=True)
    assert "api" not in agg.engine
    tombstone = published(agg, STATE_API)
    assert StateRecord.from_json(tombstone).forgotten_at == clock.now

    clock.now += 600
    restarted = forgetful(clock)
    messages = [(STATE_API, tombstone), (result_topic("us-east", "api"), retained.to_json())]
    for topic, payload in messages if tombstone_first else reversed(messages):
        restarted.pipeline.handle(topic, payload, True)
    warm_up(restarted, clock)
    assert "api" not in restarted.engine
    # Its tombstone stays retained at the broker; nothing overwrites it.
    assert restarted.outbox.latest(STATE_API) is None
    # A new result brings it back.
    clock.now += 10
    restarted.pipeline.handle(
        result_topic("us-east", "api"), probe.check(True, clock.now).to_json(), False
    )
    assert "api" in restarted.engine


@pytest.mark.parametrize("skew", [30.0, 90.0])
def test_the_clock_skew_limit_is_the_configured_one(skew: float) -> None:
    """Through the pipeline, a result 1 s past max_clock_skew ahead is future_timestamp."""
    clock = Clock()
    registry = CollectorRegistry()
    agg = build(
        AggregatorConfig(regions=list(REGIONS), max_clock_skew=skew),
        registry,
        None,
        clock=clock,
    )
    agg.pipeline.set_connected(True)
    warm_up(agg, clock)
    labels = {"reason": "future_timestamp"}
    send(agg, RegionProbe("us-east"), True, clock.now + skew + 1)
    assert registry.get_sample_value("vigil_results_rejected_total", labels) == 1
    assert "api" not in agg.engine
    send(agg, RegionProbe("eu-west"), True, clock.now + skew - 1)
    assert registry.get_sample_value("vigil_results_rejected_total", labels) == 1
    assert "api" in agg.engine


async def test_oversized_messages_are_all_counted_but_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two 64 KiB-cap rejections over a second apart: both counted, one `message_rejected` log."""
    clock = Clock()
    registry = CollectorRegistry()
    agg, _ = make(clock, registry)
    warm_up(agg, clock)
    with caplog.at_level(logging.WARNING, logger="vigil.aggregator"):
        agg.pipeline.handle(result_topic("us-east", "api"), b"{" * 70_000, False)
        # Past a one-second throttle's window (the log's own clock is real time).
        await asyncio.sleep(1.2)
        agg.pipeline.handle(result_topic("us-east", "api"), b"{" * 70_000, False)
    logged = [r for r in caplog.records if r.getMessage() == "message_rejected"]
    assert [getattr(r, "reason", None) for r in logged] == ["too_large"]
    count = registry.get_sample_value("vigil_results_rejected_total", {"reason": "too_large"})
    assert count == 2
