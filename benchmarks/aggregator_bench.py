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

from report import machine, now, write_figures, write_section  # noqa: E402

from aggregator.app import build  # noqa: E402
from aggregator.config import AggregatorConfig, StorageConfig  # noqa: E402
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


PROTOCOLS = {"5": aiomqtt.ProtocolVersion.V5, "3.1.1": aiomqtt.ProtocolVersion.V311}


def session_client(port: int, client_id: str, protocol: str) -> aiomqtt.Client:
    """A persistent session, as the aggregator keeps one, on either protocol version."""
    if protocol == "3.1.1":
        return aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=client_id,
            protocol=PROTOCOLS[protocol],
            clean_session=False,
        )
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        protocol=PROTOCOLS[protocol],
        clean_start=False,
        properties=session_properties(),
    )


async def make_session(port: int, client_id: str, protocol: str) -> None:
    async with session_client(port, client_id, protocol) as c:
        await c.subscribe(RESULTS_FILTER, qos=1)


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=2000) as c:
        c.pending_calls_threshold = 10**9
        for i in range(0, len(messages), 2000):
            await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in messages[i : i + 2000]))


# -- contenders, each run in its own process ------------------------------------------------


class Stopwatch:
    """Wall and CPU time from the first message to the last, so connecting is not counted."""

    def __init__(self) -> None:
        self.count = 0
        self._t0 = self._c0 = 0.0
        self.seconds = self.cpu_s = 0.0

    def tick(self, expect: int) -> bool:
        """Count one message; True once `expect` have arrived."""
        if self.count == 0:
            self._t0, self._c0 = time.perf_counter(), cpu_seconds()
        self.count += 1
        if self.count < expect:
            return False
        self.seconds = time.perf_counter() - self._t0
        self.cpu_s = cpu_seconds() - self._c0
        return True

    def figures(self) -> dict[str, Any]:
        # n messages span n - 1 gaps: the first one starts the clock.
        return {"messages": self.count, "seconds": self.seconds, "cpu_s": self.cpu_s}


async def end_session(port: int, client_id: str) -> None:
    """Drop a contender's persistent session, so later publishes are not queued for it too."""
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, protocol=PROTOCOLS["3.1.1"], clean_session=True
    ):
        pass


async def drain_bare(port: int, expect: int, protocol: str, client_id: str) -> dict[str, Any]:
    watch = Stopwatch()
    async with session_client(port, client_id, protocol) as c:
        await c.subscribe(RESULTS_FILTER, qos=1, timeout=600)
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            json.loads(message.payload)
            if watch.tick(expect):
                break
    return watch.figures()


async def drain_aggregator(
    port: int, expect: int, protocol: str, client_id: str, storage: Path | None = None
) -> dict[str, Any]:
    """Drain `expect` results through the aggregator; with `storage`, history goes to that file."""
    config = AggregatorConfig(
        regions=list(REGIONS),
        mqtt=MqttSettings.model_validate({"url": f"mqtt://127.0.0.1:{port}", "protocol": protocol}),
        client_id=client_id,
        startup_grace=1,
        storage=StorageConfig(path=storage),
    )
    registry = CollectorRegistry()
    agg = build(config, registry, None)
    done = asyncio.Event()
    watch = Stopwatch()

    def handle(topic: str, payload: bytes, retain: bool) -> None:
        agg.pipeline.handle(topic, payload, retain)
        if watch.tick(expect):
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
    task = asyncio.create_task(sub.run())
    await asyncio.wait_for(done.wait(), 600)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if agg.history is not None:
        agg.history.close()
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
        **watch.figures(),
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


# (contender, MQTT version) pairs, drained in this order.
DRAINERS = (("bare", "3.1.1"), ("bare", "5"), ("aggregator", "3.1.1"), ("aggregator", "5"))


def contender(mode: str, protocol: str, port: int, expect: int, client_id: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--contender",
            mode,
            "--protocol",
            protocol,
            "--port",
            str(port),
            "--expect",
            str(expect),
            "--client-id",
            client_id,
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
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        # Interleaved rounds, the best of each kept: a shared machine's slow moments should
        # not decide a ratio. Each drain gets a new session, dropped after it.
        for round_ in range(args.rounds):
            for mode, protocol in DRAINERS:
                client_id = f"bench-{mode}-{protocol.replace('.', '')}-r{round_}"
                asyncio.run(make_session(port, client_id, protocol))
                print(f"queueing {n} results for {mode} on MQTT {protocol} ...", flush=True)
                asyncio.run(publish(port, messages))
                print(f"draining with {mode} on MQTT {protocol} ...", flush=True)
                figures = contender(mode, protocol, port, n, client_id)
                asyncio.run(end_session(port, client_id))
                print(json.dumps(figures), flush=True)
                best = rows.get((mode, protocol))
                if best is None or figures["seconds"] < best["seconds"]:
                    rows[(mode, protocol)] = figures
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
    write_figures(
        "aggregator",
        {
            f"us_per_result_{mode}_{proto}": r["cpu_s"] / r["messages"] * 1e6
            for (mode, proto), r in rows.items()
        }
        | {"kib_per_pair": mem["per_pair"] / 1024},
    )
    return report(args, n, rows, mem)


def report(
    args: argparse.Namespace,
    n: int,
    rows: dict[tuple[str, str], dict[str, Any]],
    mem: dict[str, Any],
) -> str:
    rate = {k: v["messages"] / v["seconds"] for k, v in rows.items()}
    fastest = rate[("bare", "3.1.1")]
    per_pair_kib = mem["per_pair"] / 1024
    command = "python benchmarks/aggregator_bench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k not in ("output", "contender", "port", "expect", "protocol", "client_id")
    )
    names = {
        "bare": "bare aiomqtt subscriber (json.loads only)",
        "aggregator": "aggregator (validate, dedup, rule, history, metrics, alerts)",
    }

    def row(key: tuple[str, str]) -> str:
        r = rows[key]
        return (
            f"| {names[key[0]]} | {key[1]} | {r['messages']:,} | {r['seconds']:.2f} s "
            f"| **{rate[key]:,.0f}/s** | {rate[key] / fastest:.0%} "
            f"| {r['cpu_s'] / r['messages'] * 1e6:.1f} us |"
        )

    table = "\n".join(row(key) for key in DRAINERS)
    outcome = "\n".join(
        f"- aggregator on MQTT {proto}: received {int(r['received']):,} of {n:,} "
        f"(lost: {n - int(r['received'])}); rejected: {int(r['rejected'])}; ignored as "
        f"duplicate or older: {int(r['ignored'])}."
        for (mode, proto), r in rows.items()
        if mode == "aggregator"
    )
    return f"""## Aggregator

- Date: {now()}
- Machine: {machine()}
- Command: `{command}`
- Broker: Debian's mosquitto on 127.0.0.1 with `max_queued_messages 0` (no drops); the
  results were queued with QoS 1 for each contender's persistent session, then drained by
  one process per contender, one after the other, all on asyncio's own loop (the
  aggregator's since it left uvloop: see aggregator/cli.py). Each is timed from its first
  message to its last, so connecting and subscribing are not counted; the contenders run
  interleaved {args.rounds} times, each time on a new session, and each one's best run is
  shown.

### Draining a backlog of {n:,} results ({args.drain_targets} targets x 3 regions)

Against the fastest plain baseline: a bare subscriber on MQTT 3.1.1.

| contender | MQTT | messages | time | rate | of the bare 3.1.1 rate | CPU per message |
|---|---|---|---|---|---|---|
{table}

{outcome}

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
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="5")
    parser.add_argument("--client-id", default="bench")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved; best kept")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    # No uvloop: the aggregator runs on asyncio's loop, and both contenders share the loop.
    if args.contender == "bare":
        drained = drain_bare(args.port, args.expect, args.protocol, args.client_id)
        print(json.dumps(asyncio.run(drained)))
    elif args.contender == "aggregator":
        drained = drain_aggregator(args.port, args.expect, args.protocol, args.client_id)
        print(json.dumps(asyncio.run(drained)))
    elif args.contender == "memory":
        print(json.dumps(memory(args.expect, trace=False)))
    elif args.contender == "heap":
        print(json.dumps(memory(args.expect, trace=True)))
    else:
        write_section(args.output, "aggregator", bench(args))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
