"""What the probe does to the garbage collector at start."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.app import GC_YOUNG_THRESHOLD, settle_gc, tune_gc
from probe.cli import main


@pytest.fixture
def untuned() -> Iterator[tuple[int, int, int]]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield thresholds
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_leave_collections_and_young_ones_wait_longer(
    untuned: tuple[int, int, int],
) -> None:
    """Objects alive at start move to the permanent generation; the young threshold rises."""
    built_at_start = [object() for _ in range(10)]
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert not any(o is built_at_start for o in gc.get_objects())
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *untuned[1:])


@pytest.mark.usefixtures("untuned")
def test_settling_freezes_what_the_first_checks_built() -> None:
    """Per-target state built after start (metrics children, memory) leaves collections too."""
    tune_gc()
    frozen = gc.get_freeze_count()
    built_by_first_checks = [[n] for n in range(100)]
    settle_gc()
    assert gc.get_freeze_count() >= frozen + len(built_by_first_checks)
    assert not any(o is built_by_first_checks[0] for o in gc.get_objects())


@pytest.mark.usefixtures("untuned")
def test_check_config_leaves_the_collector_alone(tmp_path: Path) -> None:
    """Only a running agent tunes the collector; validating a config does not."""
    before = gc.get_threshold()
    config = tmp_path / "probe.yaml"
    config.write_text(
        "region: r\nprobe_id: p\ntargets:\n  - name: t\n    url: http://127.0.0.1:1\n"
    )
    assert main(["--config", str(config), "--check-config"]) == 0
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
