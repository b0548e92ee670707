"""Aggregator config: defaults, overrides and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.config import parse_config
from runtime.config import ConfigError

MINIMAL = "regions: [us-east, eu-west, ap-southeast]\n"


def test_defaults() -> None:
    """The runbook's rule is the default: 3 failures in 3 regions, 2 to recover."""
    config = parse_config(MINIMAL, source="agg.yaml", env={})
    rule = config.rule
    assert (rule.failures, rule.regions, rule.recoveries, rule.min_regions) == (3, 3, 2, 2)
    assert rule.stale_after is None
    assert rule.version_skew_after == 600
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.client_id == "vigil-aggregator"


def test_per_target_override_merges() -> None:
    """A target's overrides replace only the keys they set."""
    config = parse_config(
        MINIMAL + "rule: {recoveries: 3}\ntargets: {api: {failures: 5, stale_after: 1m}}\n",
        source="agg.yaml",
        env={},
    )
    rule = config.rule_for("api")
    assert (rule.failures, rule.recoveries, rule.stale_after) == (5, 3, 60.0)
    assert config.rule_for("other").failures == 3


def test_shutdown_timeout() -> None:
    """The stop budget defaults to 5 s, takes a duration, and a bad one names the key."""
    assert parse_config(MINIMAL, source="agg.yaml", env={}).shutdown_timeout == 5.0
    config = parse_config(MINIMAL + "shutdown_timeout: 1500ms\n", source="agg.yaml", env={})
    assert config.shutdown_timeout == 1.5
    with pytest.raises(ConfigError, match=r"agg\.yaml: shutdown_timeout: .*invalid duration"):
        parse_config(MINIMAL + "shutdown_timeout: soon\n", source="agg.yaml", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("regions: []\n", "regions: List should have at least 1"),
        ("regions: [a, a]\n", "regions must not repeat"),
        ("regions: [a, b]\n", "rule: regions (3) exceeds the 2 configured regions"),
        (
            MINIMAL + "rule: {failures: 0}\n",
            "rule.failures: Input should be greater than or equal to 1",
        ),
        (MINIMAL + "rule: {falures: 3}\n", "rule.falures: Extra inputs are not permitted"),
        (MINIMAL + "targets: {api: {regions: 4}}\n", "targets.api: regions (4) exceeds"),
        (MINIMAL + "listen: nowhere\n", "listen"),
        (MINIMAL + "startup_grace: soon\n", "startup_grace: Value error, invalid duration"),
        ("regions: [us/east]\n", "regions[0]: String should match pattern"),
    ],
)
def test_bad_config_names_the_key(text: str, message: str) -> None:
    """Each mistake names the file and the key."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="agg.yaml", env={})
    assert str(info.value).startswith("agg.yaml:")
    assert message in str(info.value)


def test_cli_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check-config exits 0 on a good file and 2 naming file and key on a bad one."""
    good = tmp_path / "agg.yaml"
    good.write_text(MINIMAL)
    assert main(["--config", str(good), "--check-config"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "rule: {regions: 9}\n")
    assert main(["--config", str(bad), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "regions (9) exceeds" in err
