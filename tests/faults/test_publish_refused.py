"""A broker that takes the probe's results for one target and refuses them for another.

Mosquitto's `acl_file` answers a QoS 1 PUBLISH on a denied topic with a PUBACK carrying
reason 135, `Not authorized`, on MQTT 5. Before the probe read that reason, a refused result
was taken for delivered: counted as published, dropped, and nothing said.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
import yaml

from demo.local import free_port, mosquitto_conf, wait_port
from tests.integration.conftest import find_mosquitto, start_probe
from tests.polling import wait_until, wait_until_async
from wire.result import ProbeResult
from wire.topics import RESULTS_FILTER

pytestmark = pytest.mark.integration


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[int]:
    """Mosquitto letting anyone publish results of `open` only (and presence), read all."""
    work = tmp_path / "broker"
    work.mkdir()
    (work / "acl").write_text(
        "topic read vigil/v1/results/#\n"
        "topic readwrite vigil/v1/results/+/open\n"
        "topic readwrite vigil/v1/presence/#\n"
    )
    port = free_port()
    (work / "mosquitto.conf").write_text(
        mosquitto_conf(port, work, extra=f"acl_file {work / 'acl'}\n")
    )
    proc = subprocess.Popen([find_mosquitto(), "-c", str(work / "mosquitto.conf")])
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_refused_results_are_counted_and_said_and_hold_nothing_back(
    acl_broker: int, tmp_path: Path
) -> None:
    """Refused results are counted by reason and logged once; the others keep arriving."""
    config = tmp_path / "probe.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "region": "us-east",
                "probe_id": "us-east-1",
                "mqtt": {"url": f"mqtt://127.0.0.1:{acl_broker}", "reconnect_max": "1s"},
                "listen": "127.0.0.1:0",
                "targets": [
                    {
                        "name": name,
                        "url": "http://127.0.0.1:1",
                        "interval": "300ms",
                        "timeout": "200ms",
                        "version_path": None,
                    }
                    for name in ("open", "denied")
                ],
            }
        )
    )
    arrived: list[ProbeResult] = []

    async def collect() -> None:
        async with aiomqtt.Client("127.0.0.1", acl_broker, identifier="collector") as client:
            await client.subscribe(RESULTS_FILTER, qos=1)
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                arrived.append(ProbeResult.from_json(message.payload))

    collecting = asyncio.create_task(collect())
    probe = start_probe(config, tmp_path / "probe.log")
    try:
        await wait_until(lambda: probe.events("probe_started"), what="the probe's start")
        listen = probe.events("probe_started")[0]["listen"]

        async def refused() -> float:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{listen}/metrics") as response,
            ):
                text = await response.text()
            for line in text.splitlines():
                if line.startswith('vigil_probe_results_refused_total{reason="Not authorized"}'):
                    return float(line.split()[-1])
            return 0.0

        async def enough() -> bool:
            return await refused() >= 5 and sum(r.target == "open" for r in arrived) >= 5

        await wait_until_async(enough, what="refused results counted, open ones arriving")
    finally:
        assert probe.stop() == 0
        collecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await collecting
    assert not any(r.target == "denied" for r in arrived)
    said = probe.events("result_refused")
    assert len(said) == 1, said  # once a minute, not once a result
    assert said[0]["reason"] == "Not authorized"
    seqs = [r.seq for r in arrived if r.target == "open"]
    assert seqs == sorted(seqs)
