"""`/metrics` at scale, and what a scrape costs everything else; figures go to docs/performance.md.

One aggregator, built in-process by `aggregator.app.build` on asyncio's own loop (as the
aggregator runs), holds N targets x 3 regions (results fed to its pipeline as the MQTT
subscriber would) and serves its real HTTP app on 127.0.0.1. A second process plays the
outside world: it scrapes `/metrics` every 5 s as Prometheus does (OpenMetrics-first
Accept header, gzip) and is the stand-in Alertmanager (an aiohttp server on 127.0.0.1
recording when each alert POST arrives).

Measured in the aggregator's loop while the scrapes run:
- scrape time (request sent -> body received, in the scraper) and size;
- event-loop stall: a sampler sleeps 10 ms and records how late it wakes;
- deciding result -> alert POST at the stand-in Alertmanager: outage targets are primed
  shortly before, and each deciding result is due just after a scrape starts; the clock
  starts at the time it is due (a result that arrives while the loop is held waits).

The old behaviour runs in the same process for comparison: prometheus_client's own aiohttp
handler on the same engine with the latency histograms on, as before `metrics:` existed, on a
second port, scraped the same way.

Usage: python benchmarks/scrape_bench.py [--targets N] [--scrapes N] [--old-scrapes N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import machine, now, write_figures, write_section  # noqa: E402

from aggregator.app import Aggregator, build  # noqa: E402
from aggregator.config import AggregatorConfig, AlertmanagerConfig, Limits, Rule  # noqa: E402
from aggregator.edges.http import make_app  # noqa: E402
from aggregator.metrics import EngineCollector  # noqa: E402
from demo.local import free_port  # noqa: E402
from runtime.http import serve  # noqa: E402
from runtime.service import use_uvloop  # noqa: E402
from tests.rulekit import REGIONS, RegionProbe  # noqa: E402
from wire.topics import result_topic  # noqa: E402

INTERVAL = 5.0  # seconds between scrapes, as a 5 s scrape_interval
# When each deciding result is due, after the start of a scrape: during the scrape.
DECIDING_OFFSETS = (0.02, 0.1, 0.2, 0.35)
DECISIONS_PER_SCRAPE = 2
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# -- the outside world: scraper and stand-in Alertmanager, in their own process -------------


async def outside(args: argparse.Namespace) -> dict[str, Any]:
    arrivals: dict[str, float] = {}

    async def alerts(request: web.Request) -> web.Response:
        arrived = time.monotonic()
        for alert in await request.json():
            labels = alert.get("labels", {})
            if labels.get("alertname") == "ServiceDown":
                arrivals.setdefault(labels.get("target", ""), arrived)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.am_port).start()
    print("ready", flush=True)
    plan = json.loads(sys.stdin.readline())  # [[port, start_at], ...] on the shared clock
    scrapes = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for port, start_at in plan:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            started = time.monotonic()
            headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
            async with session.get(
                f"http://127.0.0.1:{port}/metrics", headers=headers, auto_decompress=False
            ) as resp:
                wire = await resp.read()
                content_type = resp.headers.get("Content-Type", "")
                encoding = resp.headers.get("Content-Encoding", "")
            ended = time.monotonic()
            raw = gzip.decompress(wire) if encoding == "gzip" else wire
            scrapes.append(
                {
                    "port": port,
                    "start": started,
                    "end": ended,
                    "status": resp.status,
                    "wire_bytes": len(wire),
                    "bytes": len(raw),
                    "lines": raw.count(b"\n"),
                    "content_type": content_type,
                }
            )
        # The last deciding results' alerts (behind an old scrape's stall, seconds late).
        deadline = time.monotonic() + 15.0
        while len(arrivals) < DECISIONS_PER_SCRAPE * len(plan) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    await runner.cleanup()
    return {"scrapes": scrapes, "arrivals": arrivals}


# -- the aggregator side ---------------------------------------------------------------------


class LagSampler:
    """Sleeps 10 ms at a time in the loop it runs on and records how late each wake-up is."""

    def __init__(self) -> None:
        # (woke at, lateness, CPU time the loop's thread used meanwhile), monotonic seconds.
        # Lateness beyond that CPU time is the thread waiting: for the OS on a busy machine,
        # or for the GIL.
        self.samples: list[tuple[float, float, float]] = []

    async def run(self) -> None:
        while True:
            asleep, cpu = time.monotonic(), time.thread_time()
            await asyncio.sleep(0.01)
            woke = time.monotonic()
            self.samples.append((woke, woke - asleep - 0.01, time.thread_time() - cpu))

    def between(
        self, windows: list[tuple[float, float]], ticks: list[tuple[float, float]] | None = None
    ) -> list[tuple[float, float]]:
        """(lateness, CPU) of samples that woke in `windows` (given `ticks`: overlapping none)."""
        return [
            (lag, cpu)
            for at, lag, cpu in self.samples
            if any(a <= at <= b for a, b in windows)
            and not (ticks and any(a <= at and b >= at - 0.01 - lag for a, b in ticks))
        ]


def load(agg: Aggregator, targets: int) -> None:
    """Two results for every (target, region), the second one failing for every fifth target."""
    start = time.time() - 20
    for i in range(targets):
        for region in REGIONS:
            probe = RegionProbe(region, target=f"t{i}")
            for k in range(2):
                result = probe.check(k == 0 or i % 5 != 0, start + 10 * k)
                agg.pipeline.handle(result_topic(region, probe.target), result.to_json(), False)


def outage(agg: Aggregator, target: str) -> tuple[str, bytes]:
    """Make `target` up, then fail every region but the last result; returns that result."""
    probes = [RegionProbe(r, target=target) for r in REGIONS]
    at = time.time() - 1.0
    messages = []
    for ok in (True, True, False, False, False):
        at += 0.01
        for p in probes:
            messages.append((result_topic(p.region, target), p.check(ok, at).to_json()))
    for topic, payload in messages[:-1]:
        agg.pipeline.handle(topic, payload, False)
    return messages[-1]


async def decide_at(agg: Aggregator, target: str, due: float, decided: dict[str, float]) -> None:
    await asyncio.sleep(max(0.0, due - 0.5 - time.monotonic()))
    topic, payload = outage(agg, target)
    await asyncio.sleep(max(0.0, due - time.monotonic()))
    # The result is due now; if the loop was held, this line runs late and the wait counts.
    decided[target] = due
    agg.pipeline.handle(topic, payload, False)


def old_app(agg: Aggregator) -> web.Application:
    """The handler before: prometheus_client's, on the same engine with histograms on."""
    from prometheus_client.aiohttp import make_aiohttp_handler

    registry = CollectorRegistry()
    registry.register(
        EngineCollector(
            agg.engine,
            agg.store,
            agg.metrics.view_failed,
            agg.clock,
            max_series=agg.config.limits.max_series,
            latency_histograms="on",
        )
    )
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


async def run(
    args: argparse.Namespace, child: subprocess.Popen[str], am_port: int
) -> dict[str, Any]:
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    offset = [0.0]
    config = AggregatorConfig(
        regions=list(REGIONS),
        listen="127.0.0.1:0",
        startup_grace=1,
        # Results come in bursts here: staleness is not under test.
        rule=Rule(stale_after=3600),
        alertmanager=AlertmanagerConfig(urls=[f"http://127.0.0.1:{am_port}"]),
        # Room for the outage targets beside the fleet.
        limits=Limits(
            max_targets=2 * args.targets + 1000, max_targets_per_region=args.targets + 1000
        ),
    )
    async with aiohttp.ClientSession() as session:
        agg = build(config, CollectorRegistry(), session, clock=lambda: time.time() + offset[0])
        agg.pipeline.set_connected(True)
        t0 = time.perf_counter()
        # During the warm-up, as after a restart: results are applied, judged once at its end.
        load(agg, args.targets)
        agg.pipeline.tick(subscribed=True)
        offset[0] = 2.0
        agg.pipeline.tick(subscribed=True)
        assert agg.readiness.loaded
        load_s = time.perf_counter() - t0
        pairs = sum(len(s.regions) for s in agg.engine.snapshots())
        print(json.dumps({"loaded_pairs": pairs, "seconds": round(load_s, 1)}), flush=True)

        tasks = [asyncio.create_task(s.run()) for s in agg.senders]

        ticks: list[tuple[float, float]] = []

        async def ticking() -> None:
            while True:
                await asyncio.sleep(1.0)
                started = time.monotonic()
                # As aggregator/app.py runs it: a slice at a time, the loop free between.
                for _ in agg.pipeline.tick_slices(subscribed=True):
                    await asyncio.sleep(0)
                ticks.append((started, time.monotonic()))

        tasks.append(asyncio.create_task(ticking()))
        new_runner, _, new_port = await serve(make_app(agg.http_deps()), "127.0.0.1:0")
        old_runner, _, old_port = await serve(old_app(agg), "127.0.0.1:0")
        sampler = LagSampler()
        tasks.append(asyncio.create_task(sampler.run()))
        await asyncio.sleep(args.baseline)  # no scrapes: the loop's own lag, ticks included
        baseline_until = time.monotonic()

        first = time.monotonic() + 1.0
        plan = [(new_port, first + INTERVAL * k) for k in range(args.scrapes)]
        old_first = first + INTERVAL * args.scrapes + 2.0
        # The old scrape can outlast the interval: one every 2 x the interval.
        plan += [(old_port, old_first + 2 * INTERVAL * k) for k in range(args.old_scrapes)]
        child.stdin.write(json.dumps(plan) + "\n")
        child.stdin.flush()
        decided: dict[str, float] = {}
        # Two decisions per scrape, each at its own offset into it.
        deciders = [
            asyncio.create_task(
                decide_at(
                    agg,
                    f"{'new' if port == new_port else 'old'}-{k}-{j}",
                    start + DECIDING_OFFSETS[(2 * k + j) % len(DECIDING_OFFSETS)],
                    decided,
                )
            )
            for k, (port, start) in enumerate(plan)
            for j in range(DECISIONS_PER_SCRAPE)
        ]
        out, _ = await asyncio.get_running_loop().run_in_executor(None, child.communicate)
        await asyncio.gather(*deciders)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await new_runner.cleanup()
        await old_runner.cleanup()
    world = json.loads(out.strip().splitlines()[-1])
    return {
        "targets": args.targets,
        "pairs": pairs,
        "load_s": load_s,
        "new_port": new_port,
        "baseline": [lag * 1000 for at, lag, _cpu in sampler.samples if at <= baseline_until],
        "sampler": sampler,
        "ticks": ticks,
        "decided": decided,
        **world,
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    sampler: LagSampler = result["sampler"]
    out: dict[str, Any] = {
        "baseline_lag_ms": stats(result["baseline"]),
        "tick_ms": stats([(b - a) * 1000 for a, b in result["ticks"]]),
    }
    for which in ("new", "old"):
        scrapes = [
            s for s in result["scrapes"] if (s["port"] == result["new_port"]) == (which == "new")
        ]
        if not scrapes:
            continue
        windows = [(s["start"], s["end"]) for s in scrapes]
        # Stall while scraping: the samples that woke during a scrape or within 0.1 s after
        # it (a held loop reports its lateness when it lets go).
        padded = [(a, b + 0.1) for a, b in windows]
        lags = sampler.between(padded)
        no_tick = sampler.between(padded, result["ticks"])
        latencies = [
            (result["arrivals"][t] - due) * 1000
            for t, due in result["decided"].items()
            if t.startswith(which) and t in result["arrivals"]
        ]
        during = sum(
            any(a <= due <= b for a, b in windows)
            for t, due in result["decided"].items()
            if t.startswith(which)
        )
        out[which] = {
            "scrapes": len(scrapes),
            "scrape_s": [round(s["end"] - s["start"], 3) for s in scrapes],
            "bytes": scrapes[-1]["bytes"],
            "wire_bytes": scrapes[-1]["wire_bytes"],
            "lines": scrapes[-1]["lines"],
            "content_type": scrapes[-1]["content_type"],
            "status": sorted({s["status"] for s in scrapes}),
            "lag_ms": stats([lag * 1000 for lag, _cpu in lags]),
            "loop_cpu_ms": stats([cpu * 1000 for _lag, cpu in lags]),
            "lag_ms_no_tick": stats([lag * 1000 for lag, _cpu in no_tick]),
            "loop_cpu_ms_no_tick": stats([cpu * 1000 for _lag, cpu in no_tick]),
            "deciding_to_am_ms": stats(latencies),
            "decisions": len(latencies),
            "decisions_due_during_a_scrape": during,
            "alerts_missing": sum(
                1 for t in result["decided"] if t.startswith(which) and t not in result["arrivals"]
            ),
        }
    return out


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
    }


TABLE_HEAD = (
    "| `/metrics` | scrapes | time p50 / max | size | loop stall p50 / p99 / max "
    "| the same, tick excluded | deciding result -> AM p50 / p99 / max |\n"
    "|---|---|---|---|---|---|---|"
)


def triple(s: dict[str, float], digits: int = 1) -> str:
    if not s:
        return "-"
    return f"{s['p50']:.{digits}f} / {s['p99']:.{digits}f} / {s['max']:.{digits}f} ms"


def report(args: argparse.Namespace, summary: dict[str, Any]) -> str:
    command = (
        f"python benchmarks/scrape_bench.py --targets {args.targets} --scrapes {args.scrapes} "
        f"--old-scrapes {args.old_scrapes}"
    )
    rows = []
    for which, label in (
        ("new", "stepped text renderer (default: histograms `auto`, so off)"),
        ("old", "before: prometheus_client handler, histograms on"),
    ):
        s = summary.get(which)
        if not s:
            continue
        times = s["scrape_s"]
        rows.append(
            f"| {label} | {s['scrapes']} | {percentile(times, 50):.2f} s / {max(times):.2f} s "
            f"| {s['bytes'] / 1e6:.1f} MB ({s['wire_bytes'] / 1e6:.1f} MB gzip), "
            f"{s['lines']:,} lines | {triple(s['lag_ms'])} | {triple(s['lag_ms_no_tick'])} "
            f"| {triple(s['deciding_to_am_ms'], 0)} ({s['decisions']} decisions, "
            f"{s['decisions_due_during_a_scrape']} due mid-scrape, {s['alerts_missing']} lost) |"
        )
    new = summary.get("new", {})

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    goals = (
        f"scrape under 1 s: {met(bool(new) and max(new['scrape_s']) < 1)}; loop stall p99 under "
        f"50 ms: {met(bool(new) and new['lag_ms'].get('p99', 1e9) < 50)} "
        f"(tick excluded: {met(bool(new) and new['lag_ms_no_tick'].get('p99', 1e9) < 50)}); "
        f"deciding result -> Alertmanager p99 under 250 ms: "
        f"{met(bool(new) and new['deciding_to_am_ms'].get('p99', 1e9) < 250)}"
    )
    return f"""## `/metrics` at {args.targets:,} targets x {len(REGIONS)} regions

- Date: {now()}
- Machine: {machine()}
- Command: `{command}`
- The aggregator in-process (`aggregator.app.build`, asyncio's own loop as the aggregator
  runs, its real HTTP app on 127.0.0.1); a second process scrapes every {INTERVAL:g} s like
  Prometheus (OpenMetrics-first Accept, gzip) and stands in for Alertmanager (an aiohttp
  server on 127.0.0.1, not the real one). Loop stall: a 10 ms sleep in the aggregator's
  loop, how late it wakes, during each scrape (and 0.1 s after); "tick excluded" leaves
  out the sleeps that overlapped the aggregator's 1 s tick (judged in slices of 500
  targets, the loop free between). Deciding result -> Alertmanager: from when the result
  is due (just after a scrape starts) to the alert POST's arrival.

{TABLE_HEAD}
{chr(10).join(rows)}

Without scrapes the same loop lags {triple(summary["baseline_lag_ms"])} (p50 / p99 / max):
the 1 s tick (`Pipeline.tick_slices`, which judges every target a slice at a time) spans
{triple(summary["tick_ms"])} from start to end, the loop running between its slices.
Outside the ticks, the most CPU the loop's thread used within one 10 ms sleep during the
new scrapes was {new.get("loop_cpu_ms_no_tick", {}).get("max", 0):.1f} ms: lateness beyond
that is the thread waiting for a CPU (or the GIL), which a shared machine shows. Goals at the
default config: {goals}.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=8)
    parser.add_argument("--old-scrapes", type=int, default=2)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds without scrapes")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--outside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--am-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.outside:
        use_uvloop()  # the scraper and stand-in Alertmanager, not the aggregator
        print(json.dumps(asyncio.run(outside(args))), flush=True)
        return
    # The old handler compresses its whole body on the loop, and aiohttp warns each time.
    warnings.filterwarnings("ignore", "Synchronous compression", UserWarning)
    am_port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--outside", "--am-port", str(am_port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        summary = summarize(asyncio.run(run(args, child, am_port)))
    finally:
        if child.poll() is None:
            child.kill()
    print(json.dumps(summary), flush=True)
    write_section(args.output, "scrape", report(args, summary))
    if summary.get("new"):
        times = summary["new"]["scrape_s"]
        write_figures(
            "scrape",
            {"pairs": args.targets * len(REGIONS), "scrape_s_p50": percentile(times, 50)},
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
