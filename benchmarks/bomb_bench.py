"""Decompression bombs next to a healthy target; figures go to docs/performance.md.

One `vigil-probe` process checks 12 bomb targets (health and version endpoints both answer
40 MiB of zeros gzipped to about 40 KiB, `Content-Encoding: gzip`) at a 1 s interval next to
one healthy control target at 1 s, publishing to a real mosquitto. Recorded: the probe's peak
RSS (`VmHWM`), the control's checks done against those due in the window, its check latency
(`duration_ms` from the results on MQTT), the skipped checks, and the bombs' error kinds.

`--compare-root DIR` runs the same load first against the probe in another source tree (say
an older commit, from `git archive`), for a before/after table.

Usage: python benchmarks/bomb_bench.py [--duration S] [--compare-root DIR] [--output FILE]
Every load loop is bounded by --duration; every server listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe_bench import Started, cpu_seconds, live_results, percentile, start  # noqa: E402 - benchmarks/
from report import machine, now, write_section  # noqa: E402 - benchmarks/ is on sys.path

from demo.local import free_port, mosquitto_binary, mosquitto_conf, wait_port  # noqa: E402
from wire.result import ProbeResult  # noqa: E402 - after the path fix above

BOMBS = 12
INTERVAL = 1.0
TIMEOUT = 0.8
BOMB_BYTES = 40 * 1024 * 1024


def gzip_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(BOMB_BYTES // len(zeros))) + (
        packer.flush()
    )


class BombServer(asyncio.Protocol):
    """Answers every request with the bomb and closes: a raw server, so it costs little."""

    response = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(self.response)
            self.transport.close()


class Results:
    """Subscribes to every result; keeps them by target."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.by_target: collections.defaultdict[str, list[ProbeResult]] = collections.defaultdict(
            list
        )
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async for r in live_results(self.port, self.ready):
            self.by_target[r.target].append(r)


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of a process so far, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def skipped(listen_port: int) -> dict[str, float]:
    """vigil_probe_checks_skipped_total summed per target kind (control, bombs)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{listen_port}/metrics") as resp,
    ):
        text = await resp.text()
    out = {"control": 0.0, "bombs": 0.0}
    for line in text.splitlines():
        if line.startswith("vigil_probe_checks_skipped_total{"):
            kind = "control" if 'target="control"' in line else "bombs"
            out[kind] += float(line.rsplit(" ", 1)[1])
    return out


def start_probe(root: Path, config: Path, log: Path) -> Started:
    """`python -m probe` from `root`, so the probe's code is that tree's."""
    args = [sys.executable, "-m", "probe", "--config", str(config), "--log-level", "ERROR"]
    return Started(
        subprocess.Popen(args, cwd=root, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    )


def probe_yaml(path: Path, broker: int, listen: int, bomb_port: int, control_port: int) -> None:
    bomb = {
        "url": f"http://127.0.0.1:{bomb_port}",
        "health_path": "/bomb",
        "version_path": "/bomb",
        "interval": INTERVAL,
        "timeout": TIMEOUT,
    }
    path.write_text(
        yaml.safe_dump(
            {
                "region": "bench",
                "probe_id": "bench-1",
                "mqtt": {"url": f"mqtt://127.0.0.1:{broker}"},
                "listen": f"127.0.0.1:{listen}",
                "targets": [
                    {
                        "name": "control",
                        "url": f"http://127.0.0.1:{control_port}",
                        "version_path": None,
                        "interval": INTERVAL,
                        "timeout": TIMEOUT,
                    },
                    *({"name": f"bomb{i}", **bomb} for i in range(BOMBS)),
                ],
            }
        )
    )


async def run_probe(
    root: Path, work: Path, broker: int, bomb_port: int, control_port: int, duration: float
) -> dict[str, float | str]:
    """Run one probe process from source tree `root`; measure the steady window."""
    listen = free_port()
    config = work / f"probe-{listen}.yaml"
    probe_yaml(config, broker, listen, bomb_port, control_port)
    results = Results(broker)
    task = asyncio.create_task(results.run())
    await asyncio.wait_for(results.ready.wait(), 10)
    probe = start_probe(root, config, work / f"probe-{listen}.log")
    try:
        wait_port(listen)
        # Warm up over two intervals, so every target's first (jittered) check has run.
        await asyncio.sleep(2 * INTERVAL + 1)
        skipped0 = await skipped(listen)
        t0, cpu0 = time.time(), cpu_seconds(probe.proc.pid)
        await asyncio.sleep(duration)
        t1, cpu1 = time.time(), cpu_seconds(probe.proc.pid)
        skipped1 = await skipped(listen)
        peak = vm_hwm_mib(probe.proc.pid)
        # Let results of the window reach the subscriber.
        await asyncio.sleep(2)
    finally:
        probe.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    control = [r for r in results.by_target["control"] if t0 <= r.scheduled_at < t1]
    latency = [r.duration_ms for r in control]
    bombs = [
        r
        for name, rs in results.by_target.items()
        if name != "control"
        for r in rs
        if t0 <= r.scheduled_at < t1
    ]
    kinds = collections.Counter(str(r.error_kind) for r in bombs)
    return {
        "peak_rss_mib": peak,
        "cpu_util": (cpu1 - cpu0) / (t1 - t0),
        "control_done": len(control),
        "control_due": round((t1 - t0) / INTERVAL),
        "control_failed": sum(1 for r in control if not r.ok),
        "control_p50_ms": percentile(latency, 50),
        "control_p99_ms": percentile(latency, 99),
        "control_skipped": skipped1["control"] - skipped0["control"],
        "bomb_checks": len(bombs),
        "bomb_skipped": skipped1["bombs"] - skipped0["bombs"],
        "bomb_kinds": ", ".join(f"{k} {n}" for k, n in kinds.most_common()),
    }


async def main_async(args: argparse.Namespace) -> list[tuple[str, dict[str, float | str]]]:
    work = Path(tempfile.mkdtemp(prefix="vigil-bomb-bench-"))
    broker_port, control_port = free_port(), free_port()
    (work / "mosquitto.conf").write_text(mosquitto_conf(broker_port, work))
    mosquitto = mosquitto_binary()
    if mosquitto is None:
        raise SystemExit("bench: mosquitto missing; run ./scripts/bootstrap.sh --bench")
    bomb = gzip_bomb()
    BombServer.response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(bomb)).encode() + b"\r\n\r\n" + bomb
    )
    loop = asyncio.get_running_loop()
    bombs = await loop.create_server(BombServer, "127.0.0.1", 0)
    bomb_port = int(bombs.sockets[0].getsockname()[1])
    broker = start([mosquitto, "-c", str(work / "mosquitto.conf")], work / "mosquitto.log")
    target = start(
        [sys.executable, "benchmarks/target.py", "--port", str(control_port)], work / "target.log"
    )
    runs: list[tuple[str, dict[str, float | str]]] = []
    try:
        wait_port(broker_port)
        wait_port(control_port)
        trees = [(args.compare_label, args.compare_root)] if args.compare_root else []
        for label, root in [*trees, (args.label, ROOT)]:
            print(f"{label}: {BOMBS} bombs + control at 1 s for {args.duration}s ...", flush=True)
            figures = await run_probe(
                root, work, broker_port, bomb_port, control_port, args.duration
            )
            figures["bomb_wire_kib"] = len(bomb) / 1024
            print(json.dumps(figures), flush=True)
            runs.append((label, figures))
    finally:
        bombs.close()
        target.stop()
        broker.stop()
    return runs


def report(args: argparse.Namespace, runs: list[tuple[str, dict[str, float | str]]]) -> str:
    def row(label: str, r: dict[str, float | str]) -> str:
        return (
            f"| {label} | **{r['peak_rss_mib']:.0f} MiB** | {float(r['cpu_util']) * 100:.0f}% "
            f"| {r['control_done']}/{r['control_due']} | {r['control_failed']} "
            f"| {float(r['control_p50_ms']):.1f} ms | {float(r['control_p99_ms']):.1f} ms "
            f"| {r['control_skipped']:.0f} | {r['bomb_checks']} ({r['bomb_kinds']}) "
            f"| {r['bomb_skipped']:.0f} |"
        )

    command = f"python benchmarks/bomb_bench.py --duration {args.duration:g}"
    if args.label != "this tree":
        command += f" --label '{args.label}'"
    if args.compare_root:
        command += f" --compare-root {args.compare_root} --compare-label '{args.compare_label}'"
    columns = [
        "probe",
        "peak RSS",
        "probe CPU",
        "control checks done/due",
        "control failed",
        "control p50",
        "control p99",
        "control skipped",
        "bomb checks (error kinds)",
        "bomb skipped",
    ]
    header = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|"
    rows = "\n".join(row(label, r) for label, r in runs)
    compare = (
        f"The `{args.compare_label}` row ran the probe from `{args.compare_root}`, a copy of\n"
        f"that code (`git archive <commit> | tar -x -C {args.compare_root}`).\n\n"
        if args.compare_root
        else ""
    )
    wire_kib = float(runs[-1][1]["bomb_wire_kib"])
    return f"""## Decompression bombs

- Date: {now()}
- Machine: {machine()}
- Command: `{command}`
- Load: one `vigil-probe` process; {BOMBS} bomb targets whose health and version endpoints
  both answer {BOMB_BYTES >> 20} MiB of zeros gzipped ({wire_kib:.0f} KiB on the wire,
  `Content-Encoding: gzip`), and one healthy control target (`benchmarks/target.py`), all
  at a 1 s interval with a 0.8 s timeout, fresh connection per check, results to a real
  mosquitto. Window: {args.duration:g} s after two intervals of warm-up.
- Peak RSS is the probe process's `VmHWM`; CPU is its user+system time over the window.
  Control latency is `duration_ms` of the control's results; skipped checks are
  `vigil_probe_checks_skipped_total` over the window.

{header}
{rows}

{compare}The probe reads at most `max_body` (64 KiB) of decompressed body, decompressing it itself
as it streams in, and stops there: a bomb costs at most `max_body` of decompressed bytes per
check and is reported as `body_too_large` with its status. Before, aiohttp decompressed up to
its own 32 MiB limit per body, the failure was filed as `connect`, and the decompression held
the event loop long enough to starve the healthy target beside the bombs.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--compare-root", type=Path, default=None)
    parser.add_argument("--compare-label", default="before")
    parser.add_argument("--label", default="this tree", help="the row of this tree's probe")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    runs = asyncio.run(main_async(args))
    write_section(args.output, "bombs", report(args, runs))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
