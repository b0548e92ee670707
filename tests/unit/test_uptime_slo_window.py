"""The SLO window is measured on daily rollups: a whole number of days, or a config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.config import parse_config
from runtime.config import ConfigError

MINIMAL = "regions: [us-east, eu-west, ap-southeast]\n"


@pytest.mark.parametrize(
    ("window", "days"),
    [("30d", 30), ("7d", 7), ("1d", 1), ("720h", 30), (86400 * 28, 28)],
)
def test_a_whole_number_of_days_is_taken(window: str | int, days: int) -> None:
    """Any spelling of whole days is accepted as that many days."""
    config = parse_config(MINIMAL + f"slo: {{window: {window}}}\n", source="agg.yaml", env={})
    assert config.slo.window == days * 86400


def test_the_default_is_30_days() -> None:
    """Without `slo.window` the objective is measured over 30 days."""
    assert parse_config(MINIMAL, source="agg.yaml", env={}).slo.window == 30 * 86400


@pytest.mark.parametrize("window", ["36h", "12h", "30d1s", "1.5d", 86400 * 30 + 1])
def test_any_other_window_is_an_error_naming_the_key(window: str | int) -> None:
    """A window that is not whole days is refused, naming file and key, not rounded."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f"slo: {{window: {window}}}\n", source="agg.yaml", env={})
    message = str(info.value)
    assert message.startswith("agg.yaml:")
    assert "slo.window" in message
    assert "whole number of days" in message


def test_check_config_exits_2_on_a_window_of_hours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check-config exits 2 and names the file and `slo.window`."""
    bad = tmp_path / "agg.yaml"
    bad.write_text(MINIMAL + "slo: {window: 36h}\n")
    assert main(["--config", str(bad), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "slo.window" in err
