"""A broker that lets the aggregator in but refuses its subscription to results.

Mosquitto's `acl_file` never refuses a SUBSCRIBE (2.0 grants it and filters at delivery), so
the refusal comes from mosquitto's bundled dynamic-security plugin, the stock way to deny a
subscription; its ACL is changed at run time with `mosquitto_ctrl`, as an operator would.
"""

from __future__ import annotations

import getpass
import glob
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from demo.local import free_port, wait_port
from tests.integration.conftest import Process, find_mosquitto, start_aggregator
from tests.polling import wait_until, wait_until_async
from tests.rulekit import RegionProbe
from wire.topics import RESULTS_FILTER, result_topic

pytestmark = pytest.mark.integration

ADMIN = ("admin", "pw-admin")
AGGREGATOR = ("aggregator", "pw-agg")
PROBE = ("probe-us-east", "pw-us")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed: it comes with Debian's mosquitto"
    return path


def dynsec_plugin() -> str:
    found = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") + glob.glob(
        "/usr/lib/mosquitto_dynamic_security.so"
    )
    assert found, "mosquitto_dynamic_security.so is missing: it comes with Debian's mosquitto"
    return found[0]


class DynsecBroker:
    """Mosquitto with the dynamic-security plugin: no anonymous access, ACLs set at run time."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        config = workdir / "dynamic-security.json"
        init = subprocess.run(
            [tool("mosquitto_ctrl"), "dynsec", "init", str(config), *ADMIN],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert init.returncode == 0, init.stdout + init.stderr
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            f"plugin {dynsec_plugin()}\n"
            f"plugin_opt_config_file {config}\n"
        )
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)])
        wait_port(self.port)

    def ctrl(self, *args: str) -> None:
        """One `mosquitto_ctrl dynsec` command as the admin; it must succeed."""
        done = subprocess.run(
            [
                tool("mosquitto_ctrl"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-u", ADMIN[0], "-P", ADMIN[1]),
                "dynsec",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Error" not in done.stdout, done.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def refusing_broker(tmp_path: Path) -> Iterator[DynsecBroker]:
    """The aggregator may read state and presence, not results; the probe may write results."""
    b = DynsecBroker(tmp_path / "broker")
    try:
        b.ctrl("createClient", AGGREGATOR[0], "-p", AGGREGATOR[1])
        b.ctrl("createRole", "aggregator")
        b.ctrl("addRoleACL", "aggregator", "subscribePattern", "vigil/v1/state/#", "allow")
        b.ctrl("addRoleACL", "aggregator", "subscribePattern", "vigil/v1/probes/#", "allow")
        b.ctrl("addRoleACL", "aggregator", "publishClientSend", "vigil/v1/state/#", "allow")
        b.ctrl("addClientRole", AGGREGATOR[0], "aggregator")
        b.ctrl("createClient", PROBE[0], "-p", PROBE[1])
        b.ctrl("createRole", "probe")
        b.ctrl("addRoleACL", "probe", "publishClientSend", "vigil/v1/results/us-east/+", "allow")
        b.ctrl("addClientRole", PROBE[0], "probe")
        yield b
    finally:
        b.stop()


async def publish_one_result(broker: DynsecBroker) -> None:
    """A retained result, as the us-east probe would leave it, for the aggregator to find."""
    result = RegionProbe("us-east").check(True, time.time())
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username=PROBE[0], password=PROBE[1]
    ) as probe:
        await probe.publish(result_topic("us-east", "api"), result.to_json(), qos=1, retain=True)


def start_refused_aggregator(broker: DynsecBroker, tmp: Path, port: int) -> Process:
    (tmp / "aggregator.password").write_text(AGGREGATOR[1])
    config = tmp / "aggregator.yaml"
    config.write_text(
        f"""
mqtt:
  url: "{broker.url}"
  username: {AGGREGATOR[0]}
  password_file: "{tmp / "aggregator.password"}"
  reconnect_max: 1s
listen: "127.0.0.1:{port}"
regions: [us-east]
rule: {{regions: 1, min_regions: 1}}
startup_grace: 3s
client_id: vigil-aggregator-refused
"""
    )
    aggregator = start_aggregator(config, tmp / "aggregator.log")
    wait_port(port)
    return aggregator


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def test_refused_subscription_keeps_retrying_unready_until_the_acl_allows_it(
    refusing_broker: DynsecBroker, tmp_path: Path
) -> None:
    """A refused subscription is logged and retried, unready and alive, until the ACL allows it."""
    await publish_one_result(refusing_broker)
    port = free_port()
    aggregator = start_refused_aggregator(refusing_broker, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            answers: list[int] = []

            async def refused_again_and_again() -> bool:
                code, _ = await get(session, f"{base}/readyz")
                answers.append(code)
                return len(aggregator.events("mqtt_subscribe_refused")) >= 3

            await wait_until_async(refused_again_and_again, 30, what="three refusals")
            assert aggregator.proc.poll() is None, "the aggregator exited on a refusal"
            assert set(answers) == {503}, answers
            code, body = await get(session, f"{base}/readyz")
            assert code == 503
            # Between a refusal and the next connect it is not connected; after, not loaded.
            assert body["reason"] in (
                "not connected to the MQTT broker",
                "loading retained state from the broker",
            )
            refusal = aggregator.events("mqtt_subscribe_refused")[0]
            assert refusal["topic"] == RESULTS_FILTER
            assert "Not authorized" in refusal["codes"]
            # Each retry is a new connection and a new SUBSCRIBE, not one answer logged twice.
            assert len(aggregator.events("mqtt_connected")) >= 3
            assert not aggregator.events("mqtt_subscribed")
            _, metrics = await get(session, f"{base}/metrics")
            assert "vigil_results_received_total{" not in metrics

            refusing_broker.ctrl(
                "addRoleACL", "aggregator", "subscribePattern", "vigil/v1/results/#", "allow"
            )

            async def ready() -> bool:
                code, _ = await get(session, f"{base}/readyz")
                return code == 200

            await wait_until_async(ready, 30, what="/readyz 200 once the ACL allows results")
            assert aggregator.proc.poll() is None
            assert aggregator.events("mqtt_subscribed")
            _, status = await get(session, f"{base}/api/v1/status")
            [target] = status["targets"]
            [view] = target["regions"]
            assert view["last_result"]["ok"], "the retained result did not arrive"
    finally:
        assert aggregator.stop() == 0


async def test_refused_subscription_is_retried_with_backoff(
    refusing_broker: DynsecBroker, tmp_path: Path
) -> None:
    """Retries after a refused subscription back off: five refusals take at least half a second."""
    port = free_port()
    aggregator = start_refused_aggregator(refusing_broker, tmp_path, port)
    try:
        await wait_until(
            lambda: len(aggregator.events("mqtt_subscribe_refused")) >= 5,
            limit=30,
            what="five refusals",
        )
        stamps = [e["ts"] for e in aggregator.events("mqtt_subscribe_refused")[:5]]
        # A first wait of 0.2 s doubling per attempt gives about 3 s; a hot loop a few ms.
        assert stamps[-1] - stamps[0] >= 0.5, f"5 refusals in {stamps[-1] - stamps[0]:.3f}s"
    finally:
        assert aggregator.stop() == 0
