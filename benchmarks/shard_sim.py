"""Sizing Vigil past one machine: 100,000 targets x 5 regions over sharded aggregator pairs.

Not a load test: a simulation driven by per-message costs measured on one machine
(docs/performance.md, the aggregator and scrape sections), written to the `simulation`
section of docs/scaling.md. It

1. hashes the target names into virtual shards and the shards onto aggregator pairs, and
   reports the imbalance that leaves (the busiest pair sizes the fleet, not the average);
2. sizes each pair's aggregators: results per second, CPU at the measured cost per result,
   memory at the measured bytes per (target, region), and the /metrics scrape;
3. steps a 10-minute aggregator outage second by second: the backlog the broker queues, the
   time to drain it while new results keep arriving, and how late a deciding result is
   judged if it arrives during the catch-up (it waits behind the backlog);
4. counts the broker's deliveries per second (each result to both members of its pair).

Usage: python benchmarks/shard_sim.py [--targets N] [--regions N] [--interval S] ...
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import now, read_figures, write_section  # noqa: E402


def vshard(target: str, shards: int) -> int:
    """The virtual shard a target belongs to: stable across processes and releases."""
    digest = hashlib.blake2b(target.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True)
class Costs:
    """Measured on one machine; see docs/performance.md for where each comes from."""

    us_per_result: float  # aggregator CPU per result drained (protocol as deployed)
    kib_per_pair: float  # aggregator resident memory per (target, region)
    scrape_ms_per_1k_pairs: float  # /metrics build time per 1,000 pairs
    core_share: float  # the share of one core an aggregator may use in steady state


@dataclass(frozen=True)
class Plan:
    targets: int
    regions: int
    interval: float
    vshards: int
    pairs: int


def loads(plan: Plan) -> list[int]:
    """Targets per pair when vshards are dealt out to pairs in contiguous ranges."""
    per_vshard = [0] * plan.vshards
    for i in range(plan.targets):
        per_vshard[vshard(f"target-{i:06d}", plan.vshards)] += 1
    out = [0] * plan.pairs
    for shard, count in enumerate(per_vshard):
        out[shard * plan.pairs // plan.vshards] += count
    return out


def catch_up(arrival: float, drain: float, down_s: float) -> tuple[float, float]:
    """Step an outage of `down_s` then the drain, 1 s at a time.

    Returns (seconds to empty the queue after reconnecting, the worst wait of a result that
    arrived during the catch-up). `inf` when the drain cannot outpace arrivals.
    """
    if drain <= arrival:
        return math.inf, math.inf
    queue = arrival * down_s
    t = 0.0
    worst_wait = queue / drain
    while queue > 0:
        queue = max(0.0, queue + arrival - drain)
        t += 1.0
        worst_wait = max(worst_wait, queue / drain)
        if t > 86_400:  # bounded: a day of simulated catch-up is an answer already
            return math.inf, math.inf
    # The last second is only partly used.
    return t - 1.0 + (queue + drain - arrival) / drain if t else 0.0, worst_wait


def size(plan: Plan, costs: Costs, down_s: float) -> dict[str, float]:
    per_pair = loads(plan)
    busiest = max(per_pair)
    mean = plan.targets / plan.pairs
    rate = busiest * plan.regions / plan.interval  # results/s into each member of the pair
    drain = 1e6 / costs.us_per_result  # results/s one aggregator can apply flat out
    cpu = rate / drain
    catch, wait = catch_up(rate, drain, down_s)
    return {
        "pairs": plan.pairs,
        "busiest_targets": busiest,
        "imbalance": busiest / mean,
        "results_per_s": rate,
        "cpu_cores": cpu,
        "memory_mib": busiest * plan.regions * costs.kib_per_pair / 1024,
        "scrape_s": busiest * plan.regions / 1000 * costs.scrape_ms_per_1k_pairs / 1000,
        "catch_up_s": catch,
        "worst_wait_s": wait,
        "broker_deliveries_per_s": plan.targets * plan.regions / plan.interval * 2,
    }


def report(args: argparse.Namespace, costs: Costs, rows: list[dict[str, float]]) -> str:
    fit = next((r for r in rows if r["cpu_cores"] <= costs.core_share), None)
    total = args.targets * args.regions / args.interval
    lines = [
        "## Simulation: 100,000 targets x 5 regions",
        "",
        f"- Date: {now()}",
        f"- Command: `python benchmarks/shard_sim.py --targets {args.targets} --regions "
        f"{args.regions} --interval {args.interval:g} --vshards {args.vshards} "
        f"--protocol {args.protocol}`",
        f"- Inputs: {costs.us_per_result:.1f} us of aggregator CPU per result (MQTT "
        f"{args.protocol}), "
        f"{costs.kib_per_pair:.2f} KiB per (target, region), "
        f"{costs.scrape_ms_per_1k_pairs:.1f} ms of /metrics per 1,000 pairs (docs/performance.md,"
        " as recorded in docs/figures.json);"
        f" {args.targets:,} targets x {args.regions} regions every {args.interval:g} s = "
        f"**{total:,.0f} results/s**; targets hashed (BLAKE2b of the name) into "
        f"{args.vshards} virtual shards, dealt to pairs in contiguous ranges; an aggregator "
        f"may use {costs.core_share:.0%} of a core in steady state (the rest is catch-up "
        f"headroom); outage stepped: {args.down:g} s.",
        "",
        "| pairs | busiest pair's targets | imbalance | results/s per aggregator | CPU "
        "(cores) | memory | scrape | catch-up after the outage | worst wait for a deciding "
        "result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        catch = "never" if math.isinf(r["catch_up_s"]) else f"{r['catch_up_s']:.0f} s"
        wait = "unbounded" if math.isinf(r["worst_wait_s"]) else f"{r['worst_wait_s']:.0f} s"
        lines.append(
            f"| {r['pairs']:.0f} | {r['busiest_targets']:,.0f} | {r['imbalance']:.3f} "
            f"| {r['results_per_s']:,.0f} | {r['cpu_cores']:.2f} | {r['memory_mib']:,.0f} MiB "
            f"| {r['scrape_s']:.2f} s | {catch} | {wait} |"
        )
    lines += [
        "",
        f"The broker delivers every result to both members of its pair: "
        f"**{rows[0]['broker_deliveries_per_s']:,.0f} deliveries/s** plus {total:,.0f} "
        "publishes/s in, whatever the number of pairs.",
    ]
    if fit is not None:
        lines.append(
            f"Smallest fleet within {costs.core_share:.0%} of a core per aggregator: "
            f"**{fit['pairs']:.0f} pairs** ({2 * fit['pairs']:.0f} aggregators)."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=100_000)
    parser.add_argument("--regions", type=int, default=5)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--vshards", type=int, default=256)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--down", type=float, default=600.0, help="aggregator outage, seconds")
    # Defaults: the figures aggregator_bench.py and scrape_bench.py last measured.
    agg, scrape = read_figures("aggregator"), read_figures("scrape")
    parser.add_argument(
        "--protocol", choices=["3.1.1", "5"], default="3.1.1", help="the aggregators' MQTT"
    )
    parser.add_argument("--us-per-result", type=float)
    parser.add_argument("--kib-per-pair", type=float, default=agg.get("kib_per_pair"))
    parser.add_argument(
        "--scrape-ms-per-1k-pairs",
        type=float,
        default=scrape["scrape_s_p50"] * 1e6 / scrape["pairs"] if scrape else None,
    )
    parser.add_argument("--core-share", type=float, default=0.5)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "scaling.md")
    args = parser.parse_args()
    if args.us_per_result is None:
        args.us_per_result = agg.get(f"us_per_result_aggregator_{args.protocol}")
    if None in (args.us_per_result, args.kib_per_pair, args.scrape_ms_per_1k_pairs):
        parser.error("no measured figures: run aggregator_bench.py and scrape_bench.py first")
    costs = Costs(
        args.us_per_result, args.kib_per_pair, args.scrape_ms_per_1k_pairs, args.core_share
    )
    rows = [
        size(Plan(args.targets, args.regions, args.interval, args.vshards, p), costs, args.down)
        for p in args.pairs
    ]
    text = report(args, costs, rows)
    print(text)
    write_section(args.output, "simulation", text)


if __name__ == "__main__":
    main()
