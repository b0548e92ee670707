"""Probe agent benchmarks against a local target on 127.0.0.1; figures go to docs/performance.md.

1. Checks per CPU-second: one `vigil-probe` process (fresh connection per check, results
   published to a real mosquitto) and Debian's `prometheus-blackbox-exporter` driven by
   concurrent `/probe` requests, one after the other at the same offered rate.
2. Lateness at 1,000 checks/s: 1,000 targets at a 1 s interval; lateness is each result's
   `started_at - scheduled_at`, read from the results on MQTT, so it is what the wire shows.

Usage: python benchmarks/probe_bench.py [--duration S] [--rate N] [--targets N] [--output FILE]
Every load loop is bounded by --duration; every server listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import machine, now, write_section  # noqa: E402 - benchmarks/ is on sys.path

from demo.local import free_port, mosquitto_binary, mosquitto_conf, wait_port  # noqa: E402
from wire.result import ProbeResult  # noqa: E402 - after the path fix above
from wire.topics import RESULTS_FILTER  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Started:
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start(args: list[str], log: Path) -> Started:
    out = log.open("ab")
    return Started(subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=out))


async def live_results(port: int, ready: asyncio.Event) -> AsyncIterator[ProbeResult]:
    """Every live (not retained) result on the broker at `port`; `ready` once subscribed."""
    async with aiomqtt.Client("127.0.0.1", port, max_queued_incoming_messages=0) as c:
        await c.subscribe(RESULTS_FILTER, qos=1)
        ready.set()
        async for message in c.messages:
            if isinstance(message.payload, bytes) and not message.retain:
                yield ProbeResult.from_json(message.payload)


class ResultCounter:
    """Subscribes to every result; keeps (started_at, lateness) per result."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float, bool]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async for r in live_results(self.port, self.ready):
            self.samples.append((r.started_at, r.started_at - r.scheduled_at, r.ok))

    def window(self, t0: float, t1: float) -> list[tuple[float, float, bool]]:
        return [s for s in self.samples if t0 <= s[0] < t1]


def probe_yaml(
    path: Path, broker_port: int, target_port: int, targets: int, interval: float
) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "region": "bench",
                "probe_id": "bench-1",
                "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}"},
                "listen": "127.0.0.1:0",
                "max_in_flight": 1000,
                "buffer_size": 100_000,
                "targets": [
                    {
                        "name": f"t{i}",
                        "url": f"http://127.0.0.1:{target_port}",
                        "interval": interval,
                        "timeout": min(2.0, interval / 2),
                        "version_path": None,
                    }
                    for i in range(targets)
                ],
            }
        )
    )


async def run_probe(
    work: Path, broker_port: int, target_port: int, targets: int, interval: float, duration: float
) -> dict[str, float]:
    """Run one probe process; measure checks, CPU and lateness over a steady window."""
    config = work / f"probe-{targets}.yaml"
    probe_yaml(config, broker_port, target_port, targets, interval)
    counter = ResultCounter(broker_port)
    task = asyncio.create_task(counter.run())
    await asyncio.wait_for(counter.ready.wait(), 10)
    probe = start(
        [sys.executable, "-m", "probe", "--config", str(config), "--log-level", "ERROR"],
        work / f"probe-{targets}.log",
    )
    try:
        # Warm up over two intervals, so every target's first (jittered) check has run.
        await asyncio.sleep(2 * interval + 1)
        t0, cpu0 = time.time(), cpu_seconds(probe.proc.pid)
        await asyncio.sleep(duration)
        t1, cpu1 = time.time(), cpu_seconds(probe.proc.pid)
        # Let results of the window reach the subscriber.
        await asyncio.sleep(2)
    finally:
        probe.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    window = counter.window(t0, t1)
    lateness_ms = [late * 1000 for _, late, _ in window]
    checks = len(window)
    cpu = cpu1 - cpu0
    return {
        "offered_per_s": targets / interval,
        "checks": checks,
        "failed": sum(1 for *_, ok in window if not ok),
        "checks_per_s": checks / (t1 - t0),
        "cpu_s": cpu,
        "cpu_util": cpu / (t1 - t0),
        "checks_per_cpu_s": checks / cpu if cpu else float("nan"),
        "late_p50_ms": percentile(lateness_ms, 50),
        "late_p99_ms": percentile(lateness_ms, 99),
        "late_max_ms": max(lateness_ms, default=float("nan")),
    }


async def run_blackbox(
    work: Path, target_port: int, rate: float, duration: float
) -> dict[str, float]:
    """Drive blackbox_exporter's /probe at `rate` per second; measure its CPU."""
    binary = shutil.which("prometheus-blackbox-exporter")
    if binary is None:
        raise SystemExit(
            "bench: prometheus-blackbox-exporter missing; run ./scripts/bootstrap.sh --bench"
        )
    config = work / "blackbox.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules": {
                    "health": {
                        "prober": "http",
                        "timeout": "2s",
                        "http": {
                            "valid_status_codes": [200],
                            "fail_if_body_not_matches_regexp": ['"status":"ok"'],
                            "preferred_ip_protocol": "ip4",
                        },
                    }
                }
            }
        )
    )
    port = free_port()
    exporter = start(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        work / "blackbox.log",
    )
    wait_port(port)
    url = f"http://127.0.0.1:{port}/probe"
    params = {"module": "health", "target": f"http://127.0.0.1:{target_port}/api/health/ping"}
    done: list[tuple[float, bool]] = []
    connector = aiohttp.TCPConnector(limit=200)

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.get(url, params=params) as resp:
            text = await resp.text()
        done.append((time.time(), "probe_success 1" in text))

    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks: set[asyncio.Task[None]] = set()
            start_at = time.monotonic()
            total = int(rate * (duration + 3))
            t0 = cpu0 = t1 = cpu1 = 0.0
            for i in range(total):
                if i == int(rate * 3):  # three seconds of warm-up
                    t0, cpu0 = time.time(), cpu_seconds(exporter.proc.pid)
                delay = start_at + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            t1, cpu1 = time.time(), cpu_seconds(exporter.proc.pid)
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    finally:
        exporter.stop()
    window = [ok for t, ok in done if t0 <= t < t1]
    cpu = cpu1 - cpu0
    return {
        "offered_per_s": rate,
        "checks": len(window),
        "failed": sum(1 for ok in window if not ok),
        "checks_per_s": len(window) / (t1 - t0),
        "cpu_s": cpu,
        "cpu_util": cpu / (t1 - t0),
        "checks_per_cpu_s": len(window) / cpu if cpu else float("nan"),
    }


async def main_async(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    broker_port, target_port = free_port(), free_port()
    (work / "mosquitto.conf").write_text(
        mosquitto_conf(broker_port, work, extra="max_queued_messages 1000000\n")
    )
    mosquitto = mosquitto_binary()
    if mosquitto is None:
        raise SystemExit("bench: mosquitto missing; run ./scripts/bootstrap.sh --bench")
    broker = start([mosquitto, "-c", str(work / "mosquitto.conf")], work / "mosquitto.log")
    target = start(
        [sys.executable, "benchmarks/target.py", "--port", str(target_port)], work / "target.log"
    )
    try:
        wait_port(broker_port)
        wait_port(target_port)
        print(f"vigil probe at {args.rate}/s for {args.duration}s ...", flush=True)
        vigil = await run_probe(work, broker_port, target_port, args.rate, 1.0, args.duration)
        print(json.dumps(vigil), flush=True)
        print(f"blackbox_exporter at {args.rate}/s for {args.duration}s ...", flush=True)
        bb = await run_blackbox(work, target_port, args.rate, args.duration)
        print(json.dumps(bb), flush=True)
        print(f"lateness: {args.targets} targets at 1 s for {args.duration}s ...", flush=True)
        late = await run_probe(work, broker_port, target_port, args.targets, 1.0, args.duration)
        print(json.dumps(late), flush=True)
    finally:
        target.stop()
        broker.stop()
    for name, figures in (("vigil", vigil), ("blackbox", bb), ("lateness", late)):
        # A benchmark of failing checks measures error paths, not probing: refuse to report it.
        if figures["failed"] > 0.01 * figures["checks"]:
            raise SystemExit(f"bench: {name} run had {figures['failed']:.0f} failed checks")
    return report(args, vigil, bb, late)


def blackbox_version() -> str:
    bb = subprocess.run(
        ["prometheus-blackbox-exporter", "--version"], capture_output=True, text=True, check=False
    )
    out = bb.stdout or bb.stderr
    return out.splitlines()[0] if out else "blackbox_exporter version unknown"


def report(
    args: argparse.Namespace, vigil: dict[str, float], bb: dict[str, float], late: dict[str, float]
) -> str:
    def row(name: str, r: dict[str, float]) -> str:
        return (
            f"| {name} | {r['offered_per_s']:.0f} | {r['checks_per_s']:.0f} | {r['failed']:.0f} | "
            f"{r['cpu_util'] * 100:.0f}% | **{r['checks_per_cpu_s']:.0f}** |"
        )

    ratio = vigil["checks_per_cpu_s"] / bb["checks_per_cpu_s"]
    goal_cpu = "met" if ratio >= 1 else "NOT met"
    goal_late = (
        "met"
        if late["late_p99_ms"] < 10 and late["checks_per_s"] >= 0.99 * late["offered_per_s"]
        else "NOT met"
    )
    late_row = (
        f"| {late['offered_per_s']:.0f} | {late['checks_per_s']:.0f} | {late['failed']:.0f} "
        f"| {late['cpu_util'] * 100:.0f}% | {late['late_p50_ms']:.2f} ms "
        f"| {late['late_p99_ms']:.2f} ms | {late['late_max_ms']:.1f} ms |"
    )
    command = "python benchmarks/probe_bench.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "output"
    )
    return f"""## Probe agent

- Date: {now()}
- Machine: {machine()}; {blackbox_version()}
- Command: `{command}`
- Target: `benchmarks/target.py`, a raw-asyncio HTTP server answering
  `{{"status":"ok"}}` on 127.0.0.1; a real mosquitto receives the probe's results.
- Window: {args.duration:g} s of steady state after warm-up; CPU is user+system time of the
  prober's process only, from `/proc/<pid>/stat`.

### Checks per CPU-second (fresh connection per check)

Both probers checked the same target at the same offered rate, one after the other.
Vigil's figure includes judging the body, building the result and publishing it over MQTT
(QoS 1); blackbox_exporter's includes serving each `/probe` request.

| prober | offered/s | done/s | failed | CPU | checks per CPU-second |
|---|---|---|---|---|---|
{row("vigil-probe", vigil)}
{row("blackbox_exporter", bb)}

Vigil / blackbox_exporter: **{ratio:.2f}x**. Goal (at least blackbox_exporter's figure): {goal_cpu}.

### Lateness at {late["offered_per_s"]:.0f} checks/s

{args.targets} targets at a 1 s interval, fresh connection per check, results over MQTT.
Lateness is `started_at - scheduled_at` of every result in the window.

| offered/s | done/s | failed | probe CPU | p50 | p99 | max |
|---|---|---|---|---|---|---|
{late_row}

Goal (full rate, p99 lateness under 10 ms): {goal_late}.

### Notes

- Two cores serve the probe, the target, mosquitto and the benchmark's own subscriber, so
  the figures include that contention.
- The scheduler caps checks in flight (`max_in_flight`, default 1000) and skips a check
  that could only start more than one interval late, counting it in
  `vigil_probe_checks_skipped_total{{reason="late"}}`.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=300, help="checks/s for the CPU comparison")
    parser.add_argument("--targets", type=int, default=1000, help="targets for the lateness run")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    write_section(args.output, "probe", text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
