"""One absurd result, published as a probe would, must not silence any other page.

The publisher is a plain MQTT client with a probe's topic and a valid-looking payload, as
anyone holding one probe's credentials could send through the deploy ACL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiomqtt
import pytest

from tests.conftest import Serve
from tests.faults.trustkit import Trial, trial
from tests.integration.conftest import Broker
from tests.polling import wait_until_async
from tests.rulekit import RegionProbe
from wire.topics import result_topic

pytestmark = pytest.mark.integration

# The longest streak the wire accepts (wire.result.MAX_STREAK, spelled out: the code before
# the bound has no such name).
MAX_STREAK = 1_000_000_000
YEAR = 365 * 24 * 3600.0


async def publish_poison(t: Trial, failures: int) -> None:
    """A failed check of target `poison` from us-east with this streak, from a rogue client."""
    result = RegionProbe("us-east", target="poison", probe_id="us-east-rogue").check(
        False, time.time()
    )
    doc = json.loads(result.to_json())
    doc["consecutive_failures"] = failures
    async with aiomqtt.Client("127.0.0.1", t.system.broker.port, identifier="rogue") as client:
        await client.publish(
            result_topic("us-east", "poison"), json.dumps(doc).encode(), qos=1, retain=True
        )


async def get(t: Trial, path: str) -> int:
    async with t.system.session.get(f"http://127.0.0.1:{t.system.port}{path}") as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize(
    "failures", [MAX_STREAK, 10**12, 10**400], ids=["max-streak", "1e12", "1e400"]
)
async def test_a_poisoned_result_never_silences_another_targets_outage(
    broker: Broker, demo_target: str, tmp_path: Path, serve: Serve, failures: int
) -> None:
    """After an absurd streak on one target, another target's outage still fires ServiceDown."""
    async with trial(broker, demo_target, tmp_path, serve) as t:
        s = t.system
        await publish_poison(t, failures)

        async def handled() -> bool:
            # Refused and counted, or taken as a target (whose page may then fail, or not).
            rejected = await t.metric("vigil_results_rejected_total", reason="invalid")
            return rejected >= 1 or await get(t, "/api/v1/targets/poison") != 404

        await wait_until_async(handled, 20, what="the poisoned result handled")

        await s.break_target("fail")
        alert = await t.wait_listed("ServiceDown", target="api")
        assert dict(alert.labels)["target"] == "api"

        for path in ("/api/v1/status", "/metrics", "/", "/api/v1/alerts"):
            assert await get(t, path) == 200, path
        status = await s.poll()
        names = sorted(target["target"] for target in status["targets"])
        if failures > MAX_STREAK:
            # Refused at the wire and counted: it never became a target.
            assert names == ["api"]
            assert await t.metric("vigil_results_rejected_total", reason="invalid") == 1
            return
        assert names == ["api", "poison"]
        assert await get(t, "/targets/poison") == 200
        [poison] = [target for target in status["targets"] if target["target"] == "poison"]
        [us_east] = [r for r in poison["regions"] if r["region"] == "us-east"]
        assert us_east["failing"]
        # However long the streak, "failing since" is a real time at most a year back.
        assert us_east["failing_since"] >= time.time() - YEAR - 60, us_east["failing_since"]
