"""Detection latency to Alertmanager; figures go to docs/performance.md.

Everything real on 127.0.0.1: mosquitto, the aggregator process, Debian's Alertmanager.

1. Deciding result -> Alertmanager: this script publishes results as three regions' probes
   would, one fresh target per outage; the clock starts just before the deciding result
   (the third failure of the last region) is published and stops when Alertmanager's API
   lists `ServiceDown` for that target (polled every 2 ms).
2. Target down -> Alertmanager: three real probe processes (1 s interval) watch the demo
   target; the clock starts when the target is told to fail.

Usage: python benchmarks/alerting_bench.py [--outages N] [--real-outages N] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import machine, now, write_section  # noqa: E402 - benchmarks/ is on sys.path

from demo.local import (  # noqa: E402
    alertmanager_args,
    alertmanager_binary,
    alertmanager_config,
    free_port,
    mosquitto_binary,
    mosquitto_conf,
    wait_port,
)
from runtime.service import use_uvloop  # noqa: E402
from tests.rulekit import REGIONS, RegionProbe  # noqa: E402
from wire.topics import result_topic  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Stack:
    """Broker, Alertmanager and aggregator processes, stopped together."""

    def __init__(self, work: Path, rule: dict[str, object] | None = None) -> None:
        self.work = work
        # Synthetic results come in quick bursts; staleness is not under test there.
        self.rule = {"stale_after": "1h"} if rule is None else rule
        self.procs: list[subprocess.Popen[bytes]] = []
        self.broker_port = free_port()
        self.am_port = free_port()
        self.agg_port = free_port()

    def spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        mosquitto = mosquitto_binary()
        am = alertmanager_binary()
        if mosquitto is None or am is None:
            raise SystemExit("bench: needs mosquitto and prometheus-alertmanager (make bench)")
        (self.work / "mosquitto.conf").write_text(mosquitto_conf(self.broker_port, self.work))
        self.spawn([mosquitto, "-c", str(self.work / "mosquitto.conf")], "mosquitto")
        am_config = self.work / "am.yml"
        am_config.write_text(yaml.safe_dump(alertmanager_config()))
        self.spawn(
            alertmanager_args(am, am_config, self.work / "am-data", self.am_port), "alertmanager"
        )
        (self.work / "aggregator.yaml").write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"url": f"mqtt://127.0.0.1:{self.broker_port}"},
                    "listen": f"127.0.0.1:{self.agg_port}",
                    "regions": list(REGIONS),
                    "startup_grace": "2s",
                    "client_id": "bench-aggregator",
                    "rule": self.rule,
                    "alertmanager": {"urls": [f"http://127.0.0.1:{self.am_port}"]},
                }
            )
        )
        wait_port(self.broker_port)
        wait_port(self.am_port)
        self.spawn(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--config",
                str(self.work / "aggregator.yaml"),
                "--log-level",
                "WARNING",
            ],
            "aggregator",
        )
        wait_port(self.agg_port)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def alert_present(session: aiohttp.ClientSession, am_port: int, target: str) -> bool:
    params = [("filter", 'alertname="ServiceDown"'), ("filter", f'target="{target}"')]
    async with session.get(f"http://127.0.0.1:{am_port}/api/v2/alerts", params=params) as resp:
        return bool(await resp.json())


async def wait_ready(session: aiohttp.ClientSession, port: int) -> None:
    for _ in range(600):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise SystemExit("bench: aggregator never became ready")


async def verdict(session: aiohttp.ClientSession, port: int, target: str) -> str | None:
    # The one target's resource: the status listing is paged and may not hold it.
    async with session.get(f"http://127.0.0.1:{port}/api/v1/targets/{target}") as resp:
        if resp.status == 404:
            return None
        return str((await resp.json())["verdict"])


async def synthetic(stack: Stack, outages: int) -> list[float]:
    """Deciding result published -> ServiceDown listed by Alertmanager, in ms."""
    latencies: list[float] = []
    async with (
        aiohttp.ClientSession() as session,
        aiomqtt.Client("127.0.0.1", stack.broker_port) as mqtt,
    ):
        await wait_ready(session, stack.agg_port)
        for i in range(outages):
            target = f"bench-{i}"
            probes = [RegionProbe(r, target=target) for r in REGIONS]
            for _ in range(2):
                for p in probes:
                    r = p.check(True, time.time())
                    await mqtt.publish(result_topic(p.region, target), r.to_json(), qos=1)
            while await verdict(session, stack.agg_port, target) != "up":
                await asyncio.sleep(0.01)
            deciding: tuple[str, bytes] | None = None
            for round_ in range(3):
                for p in probes:
                    r = p.check(False, time.time())
                    message = (result_topic(p.region, target), r.to_json())
                    if round_ == 2 and p is probes[-1]:
                        deciding = message
                    else:
                        await mqtt.publish(*message, qos=1)
            await asyncio.sleep(0.2)  # let the other results land: only the last one decides
            assert deciding is not None
            started = time.perf_counter()
            await mqtt.publish(*deciding, qos=1)
            while not await alert_present(session, stack.am_port, target):
                await asyncio.sleep(0.002)
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def real(
    stack: Stack,
    outages: int,
    *,
    interval: str = "1s",
    check_timeout: str = "500ms",
    name: str = "demo",
) -> tuple[list[float], list[str]]:
    """Demo target told to fail -> ServiceDown listed by Alertmanager, in seconds.

    Also returns every alert Alertmanager listed that was not the expected ServiceDown of an
    outage in progress (polled every 0.2 s): the spurious ones.
    """
    demo_port = free_port()
    stack.spawn([sys.executable, "-m", "demo.target", "--port", str(demo_port)], name)
    wait_port(demo_port)
    demo = f"http://127.0.0.1:{demo_port}"
    for region in REGIONS:
        config = stack.work / f"probe-{region}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "region": region,
                    "probe_id": f"{region}-1",
                    "mqtt": {"url": f"mqtt://127.0.0.1:{stack.broker_port}"},
                    "listen": "127.0.0.1:0",
                    "targets": [
                        {
                            "name": "demo",
                            "url": demo,
                            "interval": interval,
                            "timeout": check_timeout,
                        }
                    ],
                }
            )
        )
        stack.spawn(
            [sys.executable, "-m", "probe", "--config", str(config), "--log-level", "ERROR"],
            f"{name}-probe-{region}",
        )
    times: list[float] = []
    spurious: set[str] = set()
    phase = random.Random(7)  # spreading start times, not cryptography
    period = float(interval.rstrip("s"))
    outage_on = False

    async def watch(session: aiohttp.ClientSession) -> None:
        while True:
            async with session.get(f"http://127.0.0.1:{stack.am_port}/api/v2/alerts") as resp:
                for alert in await resp.json():
                    labels = alert["labels"]
                    expected = outage_on and labels.get("alertname") == "ServiceDown"
                    if not expected and labels.get("target") in ("demo", None):
                        spurious.add(json.dumps([labels, alert["startsAt"]], sort_keys=True))
            await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        watching = asyncio.create_task(watch(session))
        for _ in range(outages):
            while await verdict(session, stack.agg_port, "demo") != "up":
                await asyncio.sleep(0.05)
            # Break it at a random point of the probes' schedule: every outage would otherwise
            # start at the same phase (the cycle follows the check grid) and measure one case.
            await asyncio.sleep(1 + phase.uniform(0, period))
            started = time.perf_counter()
            outage_on = True
            async with session.post(f"{demo}/_demo/state", json={"mode": "fail"}):
                pass
            while not await alert_present(session, stack.am_port, "demo"):
                await asyncio.sleep(0.01)
            times.append(time.perf_counter() - started)
            async with session.post(f"{demo}/_demo/state", json={"reset": True}):
                pass
            while await alert_present(session, stack.am_port, "demo"):
                await asyncio.sleep(0.05)
            outage_on = False
        watching.cancel()
    return times, sorted(spurious)


def report(
    args: argparse.Namespace,
    ms: list[float],
    seconds: list[float],
    defaults: list[float],
    spurious: list[str],
) -> str:
    median = percentile(ms, 50)
    goal = "met" if median < 100 else "NOT met"
    command = (
        f"python benchmarks/alerting_bench.py --outages {args.outages} "
        f"--real-outages {args.real_outages} --default-outages {args.default_outages}"
    )
    row_ms = (
        f"| deciding result published -> `ServiceDown` in Alertmanager | {len(ms)} "
        f"| **{median:.1f} ms** | {percentile(ms, 99):.1f} ms | {max(ms):.1f} ms |"
    )
    row_s = (
        f"| demo target fails -> `ServiceDown` in Alertmanager (3 probes, 1 s interval, N = 3) "
        f"| {len(seconds)} | {percentile(seconds, 50):.2f} s | {percentile(seconds, 99):.2f} s "
        f"| {max(seconds):.2f} s |"
    )
    row_defaults = "| at the defaults: not measured in this run | | | | |"
    if defaults:
        row_defaults = (
            f"| demo target fails -> `ServiceDown`, all defaults (10 s interval, 2 s x 2 "
            f"confirm, N = 3) | {len(defaults)} | {percentile(defaults, 50):.2f} s "
            f"| {percentile(defaults, 99):.2f} s | {max(defaults):.2f} s |"
        )
    verdict_defaults = (
        f"p50 {'met' if percentile(defaults, 50) < 15 else 'NOT met'} (goal under 15 s), "
        f"max {'met' if max(defaults) < 20 else 'NOT met'} (goal under 20 s); spurious alerts "
        f"seen in Alertmanager across both real runs: {len(spurious)}"
        if defaults
        else "not measured"
    )
    return f"""## Detection latency to Alertmanager

- Date: {now()}
- Machine: {machine()}
- Command: `{command}`
- Real mosquitto, aggregator process and Debian Alertmanager on 127.0.0.1; Alertmanager's
  API polled every 2 ms (so figures include up to ~2 ms of polling).

| measure | outages | median | p99 | max |
|---|---|---|---|---|
{row_ms}
{row_s}
{row_defaults}

Goal (median under 100 ms from the deciding result to Alertmanager): {goal}. The second row
is bounded by the rule: three failed checks per region at a 1 s interval, so about 2 to 3 s
after the failure begins, depending on where in its interval each probe was. At the defaults:
{verdict_defaults}.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outages", type=int, default=50)
    parser.add_argument("--real-outages", type=int, default=5)
    parser.add_argument("--default-outages", type=int, default=20)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    use_uvloop()
    work = Path(tempfile.mkdtemp(prefix="vigil-alertbench-"))
    stack = Stack(work)
    try:
        stack.start()
        ms = asyncio.run(synthetic(stack, args.outages))
        print(json.dumps({"deciding_to_am_ms": sorted(ms)}), flush=True)
        seconds, spurious = asyncio.run(real(stack, args.real_outages))
        print(json.dumps({"failure_to_am_s": sorted(seconds)}), flush=True)
    finally:
        stack.stop()
    defaults: list[float] = []
    if args.default_outages:
        # A second, separate stack with every default: the rule, interval, timeout, confirm.
        stack = Stack(Path(tempfile.mkdtemp(prefix="vigil-alertbench-defaults-")), rule={})
        try:
            stack.start()
            defaults, more = asyncio.run(
                real(stack, args.default_outages, interval="10s", check_timeout="5s")
            )
            spurious += more
            print(json.dumps({"defaults_failure_to_am_s": sorted(defaults)}), flush=True)
        finally:
            stack.stop()
    print(json.dumps({"spurious": spurious}), flush=True)
    write_section(args.output, "alerting", report(args, ms, seconds, defaults, spurious))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
