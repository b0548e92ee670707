"""Catch-up after an aggregator outage: 10,000 targets x 3 regions every 10 s, 10 minutes away.

While the aggregator is away the broker queues its persistent session's results: 10 minutes
at 3,000 results/s is a backlog of 1.8 M. This benchmark queues exactly that backlog at a
real mosquitto (no queue limit), then starts the aggregator's own subscriber and pipeline in
a process of its own and measures how fast it drains the whole backlog, from its first
message to its last. With new results arriving at the live rate A meanwhile, a drain rate D
catches up in B / (D - A); that figure is derived from the measured D, and said so. (A live
publisher on the same two cores as the broker and the aggregator would measure the machine's
contention, not the aggregator.) Writes the `catchup` section of docs/performance.md.

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

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator_bench import PROTOCOLS, drain_aggregator, make_session  # noqa: E402
from report import machine, now, write_figures, write_section  # noqa: E402

from demo.local import free_port, mosquitto_binary, mosquitto_conf, wait_port  # noqa: E402
from tests.rulekit import REGIONS  # noqa: E402
from wire.result import ProbeResult  # noqa: E402
from wire.topics import result_topic  # noqa: E402

CLIENT_ID = "bench-catchup"

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


def rounds(targets: int, count: int, at: float, interval: float) -> Iterator[tuple[str, bytes]]:
    """`count` rounds of one result per (target, region), each round `interval` later."""
    for k in range(count):
        for i in range(targets):
            for region in REGIONS:
                yield result(region, f"t{i}", 1 + k, at + k * interval)


def publish_backlog(port: int, messages: Iterator[tuple[str, bytes]]) -> int:
    """Queue every message with QoS 1 through plain paho.

    aiomqtt's future per publish made queueing 1.8 M take ten minutes; it is not measured.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-backlog")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    sent = 0
    last: paho.MQTTMessageInfo | None = None
    for topic, payload in messages:
        last = client.publish(topic, payload, qos=1)
        sent += 1
        if sent % 500 == 0:
            client.loop(timeout=0.0)
    while last is not None and not last.is_published():
        client.loop(timeout=0.1)
    client.disconnect()
    return sent


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
    try:
        wait_port(port)
        asyncio.run(make_session(port, CLIENT_ID, args.protocol))
        backlog_rounds = int(args.down / args.interval)
        backlog = backlog_rounds * args.targets * len(REGIONS)
        print(f"queueing a backlog of {backlog:,} results ...", flush=True)
        t = time.monotonic()
        start = time.time() - args.down
        sent = publish_backlog(port, rounds(args.targets, backlog_rounds, start, args.interval))
        assert sent == backlog
        queued_s = time.monotonic() - t
        print(f"queued in {queued_s:.0f} s; draining ...", flush=True)
        drainer = [sys.executable, __file__, "--role", "drain", "--port", str(port)]
        out = subprocess.run(
            [*drainer, "--protocol", args.protocol, "--expect", str(backlog)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
        figures = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=60)
    figures.update(backlog=backlog, queued_s=queued_s)
    return figures


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    arrival = args.targets * len(REGIONS) / args.interval
    rate = r["messages"] / r["seconds"]
    catch_up = r["backlog"] / (rate - arrival) if rate > arrival else float("inf")
    lost = r["backlog"] - int(r["received"])
    per_result = r["cpu_s"] / r["messages"] * 1e6
    return f"""## Catch-up after an aggregator outage

- Date: {now()}
- Machine: {machine()}
- Command: `python benchmarks/catchup_bench.py --targets {args.targets} --interval
  {args.interval:g} --down {args.down:g} --protocol {args.protocol}`
- What: {args.targets:,} targets x 3 regions every {args.interval:g} s ({arrival:,.0f}
  results/s) with the aggregator away {args.down:g} s: a backlog of **{r["backlog"]:,}**
  results (all passing, 10 s apart per target and region, so most are older than the
  regions' staleness when they are judged) queued for its persistent session at a real
  mosquitto with no queue limit. Then the aggregator's subscriber and pipeline (MQTT
  {args.protocol}, asyncio's loop, past warm-up, one process) drain it.

| backlog | drained in | drain rate D | CPU per result | received | lost |
|---|---|---|---|---|---|
| {r["backlog"]:,} | {r["seconds"]:.0f} s | **{rate:,.0f}/s** | {per_result:.1f} us \
| {int(r["received"]):,} | {lost} |

Catch-up with results still arriving at A = {arrival:,.0f}/s: B / (D - A) =
**{catch_up:,.0f} s** ({catch_up / 60:.1f} min) until the aggregator is back to live,
derived from the measured D (not measured with a live publisher: on two cores it would
compete with the broker and the aggregator and measure that contention). During the
catch-up a deciding result waits behind the backlog that is left; results are judged in
order and none is lost. `docs/scaling.md` steps the same arithmetic for larger fleets.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--down", type=float, default=600.0)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="3.1.1")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--role", choices=["drain"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    if args.role == "drain":
        drained = drain_aggregator(args.port, args.expect, args.protocol, CLIENT_ID)
        print(json.dumps(asyncio.run(drained)))
        return
    figures = bench(args)
    print(json.dumps(figures), flush=True)
    write_section(args.output, "catchup", report(args, figures))
    rate = figures["messages"] / figures["seconds"]
    write_figures("catchup", {"drain_per_s": rate, "backlog": figures["backlog"]})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
