"""The image and the compose stack, built and run for real (`make test-images`).

Docker when a daemon answers, else podman with private settings (engine.py). Nothing here
skips: no engine, no base image and no registry are failures with the reason.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.containers.engine import Engine, EngineError, base_image, build_vigil, detect, sweep

IMAGE = "localhost/vigil:test"
# podman's store and settings: kept between runs (a second run reuses the base it built).
# Root only (engine.detect), so a fixed path under /var/tmp is not a shared-tmp race.
DEFAULT_HOME = "/var/tmp/vigil-containers"  # noqa: S108
HOME = Path(os.environ.get("VIGIL_CONTAINERS_HOME", DEFAULT_HOME))


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        found = detect(HOME)
    except EngineError as exc:
        pytest.fail(str(exc))
    left = sweep(found)
    if left:
        print(f"\nremoved what an earlier, interrupted run left: {left}")
    return found


@pytest.fixture(scope="session")
def vigil_image(engine: Engine) -> str:
    """The project's Dockerfile built (on the local base when the official cannot be pulled)."""
    started = time.monotonic()
    try:
        base = base_image(engine)
        build_vigil(engine, base, IMAGE)
    except EngineError as exc:
        pytest.fail(str(exc))
    size = engine.image(IMAGE).get("Size", 0)
    print(f"\nimage {IMAGE} on {base}: {size / 1e6:.0f} MB, {time.monotonic() - started:.0f} s")
    return IMAGE
