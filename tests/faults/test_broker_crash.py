"""A broker crash must not lose results it acknowledged for an absent aggregator.

mosquitto saves its queues to disk every `autosave_interval` (30 s in deploy/); `kill -9`
loses what it acknowledged since. Before, 43 acknowledged results queued for an absent
aggregator were gone; the probe now sends again what was acknowledged within its
`replay_window` after every reconnect, and the aggregator drops what it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.conftest import Broker, Process, probe_config, start_probe
from tests.polling import wait_until
from wire.result import ProbeResult
from wire.topics import RESULTS_FILTER

pytestmark = pytest.mark.integration


def deploy_like(broker: Broker) -> None:
    """The broker's persistence as deploy/mosquitto/mosquitto.conf sets it."""
    deploy = (Path(__file__).parents[2] / "deploy/mosquitto/mosquitto.conf").read_text()
    interval = re.search(r"^autosave_interval (\d+)$", deploy, re.M)
    assert interval is not None
    text = broker.conf.read_text()
    broker.conf.write_text(re.sub(r"^autosave_interval \d+$", interval.group(0), text, flags=re.M))


def session(broker: Broker) -> aiomqtt.Client:
    """An aggregator-like subscriber with a persistent session at the broker."""
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier="vigil-aggregator",
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
    )


async def test_results_acknowledged_before_a_crash_still_reach_the_aggregator(
    tmp_path: Path, demo_target: str
) -> None:
    """Kill -9 of mosquitto between saves: the absent aggregator still gets every result."""
    broker = Broker(tmp_path / "broker")
    deploy_like(broker)
    broker.start()
    probe: Process | None = None
    live: list[int] = []
    try:
        async with session(broker) as aggregator:
            await aggregator.subscribe(RESULTS_FILTER, qos=1)
        # Saved on a clean stop: the session is on disk, as a long-lived one would be.
        broker.stop(signal.SIGTERM)
        broker.start()

        config = probe_config(tmp_path / "probe.yaml", broker, demo_target)
        probe = start_probe(config, tmp_path / "probe.log")

        async def watch() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watch") as w:
                await w.subscribe(RESULTS_FILTER, qos=1)
                async for message in w.messages:
                    r = ProbeResult.from_json(bytes(message.payload))
                    if r.target == "api" and not message.retain:
                        live.append(r.seq)

        watcher = asyncio.create_task(watch())
        await wait_until(lambda: len(live) >= 10, 30, what="10 results acknowledged")
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        crashed_after = max(live)

        broker.stop(signal.SIGKILL)
        broker.start()
        assert probe.proc.poll() is None

        # The probe reconnects, replays, and goes on; once a later result is out, the
        # aggregator comes back for its queue.
        await asyncio.sleep(0)
        seen: list[int] = []
        async with session(broker) as aggregator:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    async for message in aggregator.messages:
                        r = ProbeResult.from_json(bytes(message.payload))
                        if r.target == "api":
                            seen.append(r.seq)
                            if r.seq >= crashed_after + 4:
                                break
        missing = sorted(set(range(1, crashed_after + 1)) - set(seen))
        assert not missing, f"lost in the crash: seq {missing} (got {sorted(set(seen))})"
    finally:
        if probe is not None:
            probe.stop()
        broker.stop(signal.SIGKILL)
