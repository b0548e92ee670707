"""`/metrics` text: the same samples as the collector's families, escaped, capped, isolated."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig, Limits, MetricsConfig, parse_config
from aggregator.metrics import HISTOGRAM_SAMPLES, EngineCollector, escape
from runtime.config import ConfigError
from tests.rulekit import REGIONS, T0, RegionProbe
from wire.topics import result_topic

Sample = tuple[str, tuple[tuple[str, str], ...], float]
HOSTILE_VERSIONS = ['v"1', "back\\slash", "two\nlines", '}\\"\n{x="y', "ünï\\n"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def fleet(
    targets: int = 6,
    *,
    metrics: MetricsConfig | None = None,
    limits: Limits | None = None,
    versions: Iterable[str] = (),
) -> Aggregator:
    """An aggregator past warm-up holding `targets` targets in every state a scrape shows.

    Target i: up, down (3 failures a region), degraded (one region failing) or unknown (one
    region heard from) by i % 4; `versions` go to the first targets, one per region.
    """
    clock = Clock()
    agg = build(
        AggregatorConfig(
            regions=list(REGIONS),
            startup_grace=2,
            metrics=metrics or MetricsConfig(),
            limits=limits or Limits(),
        ),
        CollectorRegistry(),
        None,
        clock=clock,
        send_alerts=lambda _payloads: None,
    )
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 3
    agg.pipeline.tick(subscribed=True)
    hostile = list(versions)
    probes = []
    for i in range(targets):
        kind = i % 4
        for j, region in enumerate(REGIONS[:1] if kind == 3 else REGIONS):
            version = hostile.pop(0) if hostile else f"3.{j}"
            fails = kind == 1 or (kind == 2 and j == 0)
            probes.append((RegionProbe(region, target=f"t{i}", successes=1), version, fails))
    for k in range(3):
        clock.now += 10
        for probe, version, fails in probes:
            ok = not fails and k != 0  # a failure first: two outcomes per pair
            result = probe.check(ok, clock.now, version=version)
            agg.pipeline.handle(result_topic(probe.region, probe.target), result.to_json(), False)
    for _ in range(4):  # long enough to confirm a verdict
        clock.now += 2
        agg.pipeline.tick(subscribed=True)
    return agg


def text(agg: Aggregator) -> str:
    return "".join(agg.metrics.engine_series.exposition())


def parsed(exposition: str) -> list[Sample]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    )


def collected(collector: EngineCollector) -> list[Sample]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in collector.collect()
        for s in family.samples
    )


def families(exposition: str) -> list[tuple[str, str, str]]:
    return [(f.name, f.type, f.documentation) for f in text_string_to_metric_families(exposition)]


@pytest.mark.parametrize("histograms", ["on", "off"])
def test_the_text_has_the_collectors_samples_and_families(histograms: Any) -> None:
    """The direct text parses to exactly the samples and families prometheus_client gives."""
    agg = fleet(8, metrics=MetricsConfig(latency_histograms=histograms))
    collector = agg.metrics.engine_series
    exposition = text(agg)
    assert parsed(exposition) == collected(collector)
    reference = [(f.name, f.type, f.documentation) for f in collector.collect()]
    assert families(exposition) == reference
    names = {name for name, _labels, _value in parsed(exposition)}
    verdicts = {v for n, labels, v in parsed(exposition) if n == "vigil_target_up"}
    assert verdicts == {0.0, 1.0}
    assert ("vigil_probe_latency_seconds_bucket" in names) is (histograms == "on")
    assert {"vigil_probe_results_total", "vigil_target_version_info", "probe_success"} <= names


def test_the_whole_scrape_is_the_collectors_and_the_own_metrics() -> None:
    """`/metrics` parses to what prometheus_client makes of the whole registry."""
    agg = fleet(4)
    exposition = "".join(agg.metrics.exposition())
    assert parsed(exposition) == sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in agg.registry.collect()
        for s in family.samples
    )


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ('v"1', 'v\\"1'),
        ("a\\b", "a\\\\b"),
        ("a\nb", "a\\nb"),
        ('\\"\n', '\\\\\\"\\n'),
    ],
)
def test_label_values_are_escaped_as_the_format_says(value: str, escaped: str) -> None:
    """Backslash, double quote and newline are escaped; nothing else is touched."""
    assert escape(value) == escaped


def test_hostile_versions_and_names_come_back_intact() -> None:
    """Versions (and a name) with quotes, backslashes and newlines parse back to themselves."""
    agg = fleet(3, versions=HOSTILE_VERSIONS)
    probe = RegionProbe("us-east", target="t0")
    # Names are checked at the wire; this one is planted past it, as a bug would.
    odd = probe.check(True, T0 + 100).model_copy(update={"target": 'x"\\\ny'})
    agg.engine.apply_result(odd, T0 + 100)
    agg.store.observe(odd)
    exposition = text(agg)
    seen = {
        dict(labels)["version"]
        for name, labels, _value in parsed(exposition)
        if name == "vigil_target_version_info"
    }
    assert set(HOSTILE_VERSIONS) <= seen
    targets = {dict(labels).get("target") for _name, labels, _value in parsed(exposition)}
    assert 'x"\\\ny' in targets
    assert parsed(exposition) == collected(agg.metrics.engine_series)


@pytest.mark.parametrize(
    ("mode", "max_pairs", "targets", "expected"),
    [
        ("auto", 3000, 4, True),
        ("auto", 12, 4, True),  # 4 targets: 3 + 3 + 3 + 1 pairs = 10
        ("auto", 9, 4, False),
        ("auto", 0, 1, False),
        ("on", 0, 4, True),
        ("off", 3000, 4, False),
    ],
)
def test_latency_histograms_follow_the_mode_and_the_pair_count(
    mode: Any, max_pairs: int, targets: int, expected: bool
) -> None:
    """`auto` keeps the histograms up to `histogram_max_pairs` pairs; `on`/`off` pin them."""
    agg = fleet(
        targets, metrics=MetricsConfig(latency_histograms=mode, histogram_max_pairs=max_pairs)
    )
    exposition = text(agg)
    assert ("vigil_probe_latency_seconds_bucket" in exposition) is expected
    assert ("# TYPE vigil_probe_latency_seconds histogram" in exposition) is expected
    in_registry = agg.registry.get_sample_value(
        "vigil_probe_latency_seconds_count", {"target": "t0", "region": "us-east"}
    )
    assert (in_registry == 3.0) if expected else (in_registry is None)


@pytest.mark.parametrize("histograms", ["on", "off"])
def test_the_series_cap_leaves_the_newest_targets_out_and_counts_them(histograms: Any) -> None:
    """Past limits.max_series the newest targets go, counted; the samples stay under the cap."""
    # Per up target: 4 + 4 verdicts + 5 x 3 regions + 2 outcomes x 3 = 29, plus histograms.
    per_target = 29 + (3 * HISTOGRAM_SAMPLES if histograms == "on" else 0)
    cap = 100 + 2 * 29 * 4  # the floor of the setting, and room for two more without
    agg = fleet(
        20,
        metrics=MetricsConfig(latency_histograms=histograms),
        limits=Limits(max_series=cap),
    )
    exposition = text(agg)
    samples = parsed(exposition)
    assert samples == collected(agg.metrics.engine_series)
    kept = sorted(
        {dict(labels)["target"] for _n, labels, _v in samples if "target" in dict(labels)}
    )
    per_target_samples = [s for s in samples if "target" in dict(s[1])]
    assert len(per_target_samples) <= cap
    assert kept == sorted(f"t{i}" for i in range(len(kept))), "the oldest targets are kept"
    assert len(kept) >= cap // per_target - 1
    omitted = agg.registry.get_sample_value("vigil_metrics_targets_omitted")
    assert ("vigil_metrics_targets_omitted", (), float(20 - len(kept))) in samples
    assert omitted == 20 - len(kept) > 0


class Exploding:
    """A region view whose every field raises: a stand-in for a bug in one target's state."""

    def __getattr__(self, _name: str) -> Any:
        raise RuntimeError("planted bug in a region view")


def test_a_broken_target_is_left_out_whole_and_reported() -> None:
    """One target whose state raises costs its own lines only; the error goes to on_error."""
    agg = fleet(4)
    broken = agg.engine.snapshot("t1")
    assert broken is not None
    broken.regions["eu-west"] = Exploding()  # type: ignore[index]  # planting the bug
    exposition = text(agg)
    targets = {dict(labels).get("target") for _name, labels, _value in parsed(exposition)}
    assert targets == {None, "t0", "t2", "t3"}
    assert agg.registry.get_sample_value("vigil_evaluation_errors_total", {"stage": "metrics"})
    collector = EngineCollector(agg.engine, agg.store)  # no on_error: the bug is not hidden
    with pytest.raises(RuntimeError, match="planted bug"):
        "".join(collector.exposition())


def test_the_text_is_made_in_slices_and_survives_changes_between_them() -> None:
    """Steps let the loop run; targets added or forgotten meanwhile never break the scrape."""
    agg = fleet(12)
    steps = agg.metrics.engine_series.exposition(slice_seconds=0.0)
    assert next(steps) == ""  # nothing read yet: a step is a slice of targets
    for i in range(100, 150):  # the engine's dict grows while the scrape is paused
        probe = RegionProbe("us-east", target=f"t{i}")
        agg.pipeline.handle(
            result_topic("us-east", probe.target), probe.check(True, T0 + 40).to_json(), False
        )
    agg.engine._targets.pop("t5")  # forgotten meanwhile
    agg.store.forget("t5")
    pieces = list(steps)
    assert pieces.count("") >= 10  # a slice per target at slice_seconds=0
    targets = {dict(labels).get("target") for _n, labels, _v in parsed("".join(pieces))}
    assert "t5" not in targets
    assert "t4" in targets
    assert "t100" not in targets  # arrived after this scrape began: in the next one
    assert "t100" in {dict(labels).get("target") for _n, labels, _v in parsed(text(agg))}


@pytest.mark.parametrize(
    ("yaml", "mode", "max_pairs"),
    [
        ("", "auto", 3000),
        ("metrics: {latency_histograms: on}\n", "on", 3000),
        ("metrics: {latency_histograms: off, histogram_max_pairs: 10}\n", "off", 10),
        ("metrics: {latency_histograms: 'off'}\n", "off", 3000),
        ("metrics: {histogram_max_pairs: 0}\n", "auto", 0),
    ],
)
def test_metrics_config(yaml: str, mode: str, max_pairs: int) -> None:
    """`metrics:` sets the histogram mode (a bare YAML on/off included) and the pair limit."""
    config = parse_config("regions: [a, b, c]\n" + yaml, source="agg.yaml", env={})
    assert config.metrics.latency_histograms == mode
    assert config.metrics.histogram_max_pairs == max_pairs


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (
            "metrics: {latency_histograms: sometimes}\n",
            "metrics.latency_histograms: Input should be 'auto', 'on' or 'off'",
        ),
        ("metrics: {latency_histograms: 1}\n", "metrics.latency_histograms"),
        ("metrics: {histogram_max_pairs: -1}\n", "metrics.histogram_max_pairs"),
        ("metrics: {histograms: on}\n", "metrics.histograms: Extra inputs are not permitted"),
    ],
)
def test_bad_metrics_config_names_the_key(yaml: str, message: str) -> None:
    """A bad `metrics:` value is an error naming the file and the key."""
    with pytest.raises(ConfigError) as info:
        parse_config("regions: [a, b, c]\n" + yaml, source="agg.yaml", env={})
    assert str(info.value).startswith("agg.yaml:")
    assert message in str(info.value)
