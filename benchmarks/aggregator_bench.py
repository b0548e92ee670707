"""Aggregator benchmarks; figures go to docs/performance.md.

1. Backlog drain: N QoS 1 results are queued for two persistent sessions at a real
   mosquitto (no queue limit), then drained, one contender per process, one after the other:
   a bare aiomqtt subscriber that only JSON-decodes each message, and the aggregator's own
   subscriber and handler (validation, dedup, the rule engine and metrics included).
2. Memory: resident memory per (target, region) with 10,000 targets x 3 regions loaded.

Usage: python benchmarks/aggregator_bench.py [--messages N] [--targets N] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import machine, now, write_section  # noqa: E402 - benchmarks/ is on sys.path

from aggregator.app import build  # noqa: E402
from aggregator.config import AggregatorConfig  # noqa: E402
from aggregator.edges.mqtt import Subscriber  # noqa: E402
from demo.local import free_port, mosquitto_binary, mosquitto_conf, wait_port  # noqa: E402
from runtime.config import MqttSettings  # noqa: E402
from tests.rulekit import REGIONS, RegionProbe  # noqa: E402
from wire.topics import RESULTS_FILTER, result_topic  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    return props


def results(targets: int, per_pair: int) -> list[tuple[str, bytes]]:
    """Valid results, in each (target, region)'s seq order, interleaved across pairs."""
    probes = [RegionProbe(r, target=f"t{i}") for i in range(targets) for r in REGIONS]
    start = time.time() - per_pair * 10
    out = []
    for k in range(per_pair):
        for p in probes:
            out.append(
                (result_topic(p.region, p.target), p.check(k % 4 != 0, start + 10 * k).to_json())
            )
    return out


async def make_sessions(port: int, ids: list[str]) -> None:
    for client_id in ids:
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=session_properties(),
        ) as c:
            await c.subscribe(RESULTS_FILTER, qos=1)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=2000) as c:
        c.pending_calls_threshold = 10**9
        for i in range(0, len(messages), 2000):
            await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in messages[i : i + 2000]))


# -- contenders, each run in its own process ------------------------------------------------


async def drain_bare(port: int, expect: int) -> dict[str, Any]:
    count = 0
    t0, c0 = time.perf_counter(), cpu_seconds()
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-bare",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=session_properties(),
    ) as c:
        await c.subscribe(RESULTS_FILTER, qos=1, timeout=600)
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            json.loads(message.payload)
            count += 1
            if count >= expect:
                break
    return {"messages": count, "seconds": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0}


async def drain_aggregator(port: int, expect: int) -> dict[str, Any]:
    config = AggregatorConfig(
        regions=list(REGIONS),
        mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}"),
        client_id="bench-agg",
        startup_grace=1,
    )
    registry = CollectorRegistry()
    agg = build(config, registry, None)
    done = asyncio.Event()
    count = 0

    def handle(topic: str, payload: bytes, retain: bool) -> None:
        nonlocal count
        agg.pipeline.handle(topic, payload, retain)
        count += 1
        if count >= expect:
            done.set()

    sub = Subscriber(
        config.mqtt,
        handle,
        agg.outbox,
        client_id=config.client_id,
        session_expiry=3600,
        subscribe_timeout=600,
    )
    # As an aggregator that is past its warm-up and reconnects to a backlog: every applied
    # result is judged at once, and state records go out through the subscriber.
    agg.readiness.loaded = True
    t0, c0 = time.perf_counter(), cpu_seconds()
    task = asyncio.create_task(sub.run())
    await asyncio.wait_for(done.wait(), 600)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    applied = sum(
        registry.get_sample_value("vigil_results_received_total", {"region": r}) or 0
        for r in REGIONS
    )
    ignored = sum(
        registry.get_sample_value("vigil_results_ignored_total", {"reason": r}) or 0
        for r in ("duplicate", "older")
    )
    rejected = sum(
        s.value
        for m in registry.collect()
        if m.name == "vigil_results_rejected"
        for s in m.samples
        if s.name.endswith("_total")
    )
    return {
        "messages": count,
        "seconds": seconds,
        "cpu_s": cpu,
        "received": applied,
        "ignored": ignored,
        "rejected": rejected,
    }


def memory(targets: int, trace: bool) -> dict[str, Any]:
    """Memory held per (target, region): RSS growth, or with `trace` the traced Python heap.

    tracemalloc itself costs memory, so the two are measured in separate processes.
    """
    config = AggregatorConfig(regions=list(REGIONS), startup_grace=1)
    offset = 0.0
    agg = build(config, CollectorRegistry(), None, clock=lambda: time.time() + offset)
    start = time.time() - 20
    gc.collect()
    before = rss_bytes()
    if trace:
        tracemalloc.start()
    # Payloads are made one pair at a time and dropped, so nothing but what the aggregator
    # keeps stays allocated: two results per pair, so the interval is learned too.
    for i in range(targets):
        for region in REGIONS:
            probe = RegionProbe(region, target=f"t{i}")
            for k in range(2):
                result = probe.check(k == 1, start + 10 * k)
                agg.pipeline.handle(result_topic(region, probe.target), result.to_json(), False)
    agg.pipeline.tick(subscribed=True)
    offset = 2.0
    agg.pipeline.tick(subscribed=True)  # warm-up over: every target evaluated
    assert agg.readiness.loaded
    gc.collect()
    after = rss_bytes()
    pairs = sum(len(s.regions) for s in agg.engine.snapshots())
    if trace:
        return {"traced_per_pair": tracemalloc.get_traced_memory()[0] / pairs}
    return {"pairs": pairs, "rss_delta": after - before, "per_pair": (after - before) / pairs}


# -- orchestration ------------------------------------------------------------------------


def contender(mode: str, port: int, expect: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--contender",
            mode,
            "--port",
            str(port),
            "--expect",
            str(expect),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def bench(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="vigil-aggbench-"))
    port = free_port()
    conf = work / "mosquitto.conf"
    # No queue limit: this measures draining, and a dropped message would be a lie.
    conf.write_text(mosquitto_conf(port, work, extra="max_queued_messages 0\nmax_queued_bytes 0\n"))
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("bench: mosquitto missing; run ./scripts/bootstrap.sh")
    broker = subprocess.Popen([binary, "-c", str(conf)])
    try:
        wait_port(port)
        per_pair = max(1, args.messages // (args.drain_targets * len(REGIONS)))
        messages = results(args.drain_targets, per_pair)
        n = len(messages)
        rows = []
        for mode in ("bare", "aggregator"):
            asyncio.run(make_sessions(port, [f"bench-{'bare' if mode == 'bare' else 'agg'}"]))
            print(f"queueing {n} results for {mode} ...", flush=True)
            asyncio.run(publish(port, messages))
            print(f"draining with {mode} ...", flush=True)
            figures = contender(mode, port, n)
            print(json.dumps(figures), flush=True)
            rows.append((mode, figures))
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=20)
    mem: dict[str, Any] = {}
    for mode in ("memory", "heap"):
        out = subprocess.run(
            [sys.executable, __file__, "--contender", mode, "--expect", str(args.targets)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        mem.update(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(mem), flush=True)
    return report(args, n, dict(rows), mem)


def report(
    args: argparse.Namespace, n: int, rows: dict[str, dict[str, Any]], mem: dict[str, Any]
) -> str:
    bare, agg = rows["bare"], rows["aggregator"]
    rate = {k: v["messages"] / v["seconds"] for k, v in rows.items()}
    ratio = rate["aggregator"] / rate["bare"]
    lost = n - int(agg["received"])
    per_pair_kib = mem["per_pair"] / 1024
    command = "python benchmarks/aggregator_bench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k not in ("output", "contender", "port", "expect")
    )

    def row(name: str, r: dict[str, Any]) -> str:
        return (
            f"| {name} | {r['messages']} | {r['seconds']:.2f} s "
            f"| **{r['messages'] / r['seconds']:,.0f}/s** "
            f"| {r['cpu_s'] / r['messages'] * 1e6:.1f} us |"
        )

    return f"""## Aggregator

- Date: {now()}
- Machine: {machine()}
- Command: `{command}`
- Broker: Debian's mosquitto on 127.0.0.1 with `max_queued_messages 0` (no drops); the
  results were queued with QoS 1 for each contender's persistent session, then drained by
  one process per contender, one after the other, both on asyncio's own loop (the
  aggregator's since it left uvloop: see aggregator/cli.py).

### Draining a backlog of {n:,} results ({args.drain_targets} targets x 3 regions)

| contender | messages | time | rate | CPU per message |
|---|---|---|---|---|
{row("bare aiomqtt subscriber (json.loads only)", bare)}
{row("aggregator (validate, dedup, rule, metrics)", agg)}

The aggregator drained at **{ratio:.0%}** of the bare subscriber's rate (goal: at least 70%).
Results received by the aggregator: {int(agg["received"]):,} of {n:,} (lost: {lost});
rejected: {int(agg["rejected"])}; ignored as duplicate or older: {int(agg["ignored"])}.

### Memory at {args.targets:,} targets x 3 regions

{mem["pairs"]:,} (target, region) pairs, each fed two results through the same handler as
the drain and then evaluated. Resident memory grew by {mem["rss_delta"] / 2**20:.1f} MiB:
**{per_pair_kib:.2f} KiB per pair** (goal: under 4 KiB); the Python heap still held by
then, per tracemalloc, was {mem["traced_per_pair"] / 1024:.2f} KiB per pair. This covers the
engine's state (with the latest result's phases), the latest evaluation per target, the
per-pair metric counts and the ring of the last 20 results per pair (`history`); a
`/metrics` scrape allocates more while it runs.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--drain-targets", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--contender", choices=["bare", "aggregator", "memory", "heap"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    # No uvloop: the aggregator runs on asyncio's loop, and both contenders share the loop.
    if args.contender == "bare":
        print(json.dumps(asyncio.run(drain_bare(args.port, args.expect))))
    elif args.contender == "aggregator":
        print(json.dumps(asyncio.run(drain_aggregator(args.port, args.expect))))
    elif args.contender == "memory":
        print(json.dumps(memory(args.expect, trace=False)))
    elif args.contender == "heap":
        print(json.dumps(memory(args.expect, trace=True)))
    else:
        write_section(args.output, "aggregator", bench(args))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
