"""The probe agent in-process, without a broker: when it calls `on_warm`."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from probe.app import run_agent, warm_up_time
from probe.config import ProbeConfig, TargetConfig
from tests.polling import wait_until


def test_warm_up_lasts_until_every_first_check_is_over() -> None:
    """First checks are jittered over one interval and may take their timeout."""
    targets = [
        TargetConfig(name="a", url="http://127.0.0.1:1", interval=10.0, timeout=2.0),
        TargetConfig(name="b", url="http://127.0.0.1:1", interval=30.0, timeout=5.0),
    ]
    assert warm_up_time(targets) == 35.0


async def test_on_warm_is_called_once_after_every_target_was_checked() -> None:
    """The agent calls `on_warm` once, after every target's first check, and not again."""
    config = ProbeConfig(
        region="r",
        probe_id="p",
        listen="127.0.0.1:0",
        targets=[
            TargetConfig(name=f"t{i}", url="http://127.0.0.1:1", interval=0.3, timeout=0.2)
            for i in range(3)
        ],
    )
    registry = CollectorRegistry()
    warm: list[float] = []
    stop = asyncio.Event()
    started = time.monotonic()
    agent = asyncio.create_task(
        run_agent(config, stop, registry=registry, on_warm=lambda: warm.append(time.monotonic()))
    )

    def checked() -> int:
        """How many targets have a `probe_success` sample: were checked at least once."""
        return sum(
            registry.get_sample_value("probe_success", {"target": f"t{i}"}) is not None
            for i in range(3)
        )

    await wait_until(lambda: warm, what="on_warm")
    assert warm[0] - started >= warm_up_time(config.targets) - 0.05
    assert checked() == 3
    await asyncio.sleep(2 * warm_up_time(config.targets))
    stop.set()
    assert await asyncio.wait_for(agent, 10) == 0
    assert len(warm) == 1
