"""Catch-up after an aggregator outage: 10,000 targets x 3 regions every 10 s, 10 minutes away.

While the aggregator is away the broker queues its persistent session's results: 10 minutes
at 3,000 results/s is a backlog of 1.8 M. This benchmark queues exactly that backlog at a
real mosquitto (no queue limit), then starts the aggregator's own subscriber and pipeline in
one process while another process keeps publishing new results at the live rate, and
measures how long the aggregator takes to be within one second of live: the time during
which a new outage would be judged late. Writes the `catchup` section of
docs/performance.md.

Usage: python benchmarks/catchup_bench.py [--targets N] [--interval S] [--down S]
    [--protocol 3.1.1|5] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator_bench import PROTOCOLS, make_session  # noqa: E402
from report import machine, now, write_section  # noqa: E402

from aggregator.app import build  # noqa: E402
from aggregator.config import AggregatorConfig  # noqa: E402
from aggregator.edges.mqtt import Subscriber  # noqa: E402
from demo.local import free_port, mosquitto_binary, mosquitto_conf, wait_port  # noqa: E402
from runtime.config import MqttSettings  # noqa: E402
from tests.rulekit import REGIONS  # noqa: E402
from wire.result import ProbeResult  # noqa: E402
from wire.topics import result_topic  # noqa: E402

CLIENT_ID = "bench-catchup"
PROGRESS_EVERY = 0.25  # seconds between progress lines

# A passing result, formatted rather than built: 1.8 M pydantic models would take a minute.
OK_RESULT = (
    '{"schema":"vigil.result/v1","probe_id":"%(region)s-1","region":"%(region)s",'
    '"target":"%(target)s","boot_id":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","seq":%(seq)d,'
    '"scheduled_at":%(at).3f,"started_at":%(at).3f,"duration_ms":12.0,"ok":true,'
    '"status_code":200,"phases":{},"version":"3.8.34","consecutive_failures":0,'
    '"consecutive_successes":%(seq)d,"slow":false,"inconclusive":false}'
)


def result(region: str, target: str, seq: int, at: float) -> tuple[str, bytes]:
    payload = OK_RESULT % {"region": region, "target": target, "seq": seq, "at": at}
    return result_topic(region, target), payload.encode()


def rounds(
    targets: int, first_seq: int, count: int, at: float, interval: float
) -> Iterator[tuple[str, bytes]]:
    """`count` rounds of one result per (target, region), each round `interval` later."""
    for k in range(count):
        for i in range(targets):
            for region in REGIONS:
                yield result(region, f"t{i}", first_seq + k, at + k * interval)


async def publish_backlog(port: int, messages: Iterator[tuple[str, bytes]]) -> int:
    sent = 0
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=2000) as c:
        c.pending_calls_threshold = 10**9
        while True:
            chunk = [m for _, m in zip(range(2000), messages, strict=False)]
            if not chunk:
                return sent
            await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in chunk))
            sent += len(chunk)


# -- the two processes beside the orchestrator ---------------------------------------------


async def live(port: int, targets: int, interval: float, first_seq: int, progress: Path) -> None:
    """Publish a round of results every `interval`, evenly spread, until killed."""
    rate = targets * len(REGIONS) / interval
    sent = 0
    pending: set[asyncio.Task[None]] = set()
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=2000) as c:
        c.pending_calls_threshold = 10**9
        t0 = time.monotonic()
        last_report = 0.0
        with progress.open("w") as out:
            seq = first_seq
            while True:
                for i in range(targets):
                    for region in REGIONS:
                        due = t0 + sent / rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        topic, payload = result(region, f"t{i}", seq, time.time())
                        # Not awaited one by one: acknowledgements come back in bulk.
                        task = asyncio.create_task(c.publish(topic, payload, qos=1))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                        sent += 1
                        if time.monotonic() - last_report >= PROGRESS_EVERY:
                            last_report = time.monotonic()
                            out.write(f"{time.time()} {sent}\n")
                            out.flush()
                seq += 1


async def aggregate(port: int, protocol: str, progress: Path) -> None:
    """The aggregator's subscriber and pipeline, counting what it has handled, until killed."""
    config = AggregatorConfig(
        regions=list(REGIONS),
        mqtt=MqttSettings.model_validate({"url": f"mqtt://127.0.0.1:{port}", "protocol": protocol}),
        client_id=CLIENT_ID,
        startup_grace=1,
    )
    agg = build(config, CollectorRegistry(), None)
    handled = 0

    def handle(topic: str, payload: bytes, retain: bool) -> None:
        nonlocal handled
        agg.pipeline.handle(topic, payload, retain)
        handled += 1

    sub = Subscriber(
        config.mqtt,
        handle,
        agg.outbox,
        client_id=CLIENT_ID,
        session_expiry=3600,
        subscribe_timeout=600,
    )
    agg.readiness.loaded = True  # past warm-up, as an aggregator that reconnects
    task = asyncio.create_task(sub.run())
    with progress.open("w") as out:
        while not task.done():
            out.write(f"{time.time()} {handled}\n")
            out.flush()
            await asyncio.sleep(PROGRESS_EVERY)
    await task


def last(progress: Path) -> tuple[float, int]:
    lines = progress.read_text().splitlines() if progress.exists() else []
    for line in reversed(lines):
        parts = line.split()
        if len(parts) == 2:
            return float(parts[0]), int(parts[1])
    return 0.0, 0


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vigil-catchup-"))
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, work, extra="max_queued_messages 0\nmax_queued_bytes 0\n"))
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("bench: mosquitto missing; run ./scripts/bootstrap.sh")
    # The template must be a valid result, or this measures rejections.
    ProbeResult.from_json(result("us-east", "t0", 1, time.time())[1])
    broker = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_port(port)
        asyncio.run(make_session(port, CLIENT_ID, args.protocol))
        backlog_rounds = int(args.down / args.interval)
        backlog = backlog_rounds * args.targets * len(REGIONS)
        print(f"queueing a backlog of {backlog:,} results ...", flush=True)
        t = time.monotonic()
        start = time.time() - args.down
        sent = asyncio.run(
            publish_backlog(port, rounds(args.targets, 1, backlog_rounds, start, args.interval))
        )
        assert sent == backlog
        print(f"queued in {time.monotonic() - t:.0f} s", flush=True)
        me = [sys.executable, __file__, "--port", str(port), "--protocol", args.protocol]
        shape = ["--targets", str(args.targets), "--interval", str(args.interval)]
        live_log, agg_log = work / "live.txt", work / "agg.txt"
        first = str(backlog_rounds + 1)
        live_args = [*me, *shape, "--role", "live", "--first-seq", first, "--progress"]
        procs.append(subprocess.Popen([*live_args, str(live_log)], cwd=ROOT))
        time.sleep(1.0)  # live traffic is flowing before the aggregator returns
        t_start = time.time()
        procs.append(
            subprocess.Popen([*me, "--role", "aggregate", "--progress", str(agg_log)], cwd=ROOT)
        )
        caught_at = None
        rate = args.targets * len(REGIONS) / args.interval
        while time.time() - t_start < args.limit:
            time.sleep(PROGRESS_EVERY)
            if any(p.poll() is not None for p in procs):
                raise SystemExit("bench: a contender exited early")
            _, handled = last(agg_log)
            _, published = last(live_log)
            # Within a second of live: everything queued, and all but the last second's news.
            if handled >= backlog + published - rate:
                caught_at = time.time()
                break
        _, published = last(live_log)
        _, handled = last(agg_log)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
    return {
        "backlog": backlog,
        "rate": rate,
        "catch_up_s": None if caught_at is None else caught_at - t_start,
        "handled": handled,
        "published_live": published,
    }


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    caught = r["catch_up_s"]
    outcome = (
        f"**{caught:.0f} s** from the aggregator's start until it was within one second of "
        f"live (it had handled {r['handled']:,} results: the backlog and "
        f"{r['handled'] - r['backlog']:,} of the {r['published_live']:,} live ones)"
        if caught is not None
        else f"not caught up within {args.limit:.0f} s ({r['handled']:,} handled)"
    )
    drain = (r["handled"] / caught) if caught else float("nan")
    return f"""## Catch-up after an aggregator outage

- Date: {now()}
- Machine: {machine()}
- Command: `python benchmarks/catchup_bench.py --targets {args.targets} --interval
  {args.interval:g} --down {args.down:g} --protocol {args.protocol}`
- What: {args.targets:,} targets x 3 regions every {args.interval:g} s
  ({r["rate"]:,.0f} results/s) with the aggregator away {args.down:g} s: a backlog of
  **{r["backlog"]:,}** results queued for its persistent session at a real mosquitto (no
  queue limit), all passing. Then the aggregator's subscriber and pipeline start in one
  process (MQTT {args.protocol}, asyncio's loop, past warm-up) while another process keeps
  publishing at the live rate.

Catch-up: {outcome}; {drain:,.0f} results/s on average while catching up. A deciding
result that arrives during the catch-up waits behind the backlog that is left, so paging
is late by up to the catch-up time; results are judged in order and none is lost (the
broker queues them). `docs/scaling.md` steps the same arithmetic for larger fleets.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--down", type=float, default=600.0)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="3.1.1")
    parser.add_argument("--limit", type=float, default=1200.0, help="give up after, seconds")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--role", choices=["live", "aggregate"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-seq", type=int, default=1)
    parser.add_argument("--progress", type=Path)
    args = parser.parse_args()
    if args.role == "live":
        asyncio.run(live(args.port, args.targets, args.interval, args.first_seq, args.progress))
    elif args.role == "aggregate":
        asyncio.run(aggregate(args.port, args.protocol, args.progress))
    else:
        figures = bench(args)
        print(json.dumps(figures), flush=True)
        write_section(args.output, "catchup", report(args, figures))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
