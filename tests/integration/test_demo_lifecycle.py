"""`vigil demo` leaves no process behind, whether stopped by SIGTERM or SIGHUP or killed.

Each test starts the real demo (mosquitto, Alertmanager, the demo target, the aggregator and
three probes), lists every process under it by PID from /proc, signals the demo, and checks
each PID is gone. Whatever a test leaves running is killed by PID before it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.demo import REGIONS
from demo.local import free_port
from tests.integration.conftest import ROOT, find_alertmanager
from tests.polling import wait_until

pytestmark = pytest.mark.integration

# mosquitto, Alertmanager, the demo target, the aggregator, three probes.
CHILDREN = 7


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie does not (it runs nothing and holds no port)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_demo(tmp_path: Path) -> subprocess.Popen[bytes]:
    """`vigil demo`, its output in `demo.out` and its work directory under `tmp_path`."""
    with (tmp_path / "demo.out").open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "demo", "--port", str(free_port())],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )


def descendants(root: int) -> list[int]:
    """Every live process under `root`, at any depth, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces or parentheses: the fields follow the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return [pid for pid in found if alive(pid)]


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    out: Path
    pids: list[int]
    logs: Path

    def events(self, log: str, name: str) -> list[dict[str, Any]]:
        found = []
        for line in (self.logs / log).read_text(errors="replace").splitlines():
            with suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("event") == name:
                    found.append(doc)
        return found


@asynccontextmanager
async def running_demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """The demo up with all its children listed; afterwards nothing of it is left running."""
    find_alertmanager()  # else the demo starts six children, not seven
    out = tmp_path / "demo.out"
    proc = await asyncio.to_thread(start_demo, tmp_path)
    pids: list[int] = []
    try:
        await wait_until(
            lambda: "Ctrl-C stops everything" in out.read_text() or proc.poll() is not None,
            limit=60,
            what="the demo's banner",
        )
        assert proc.poll() is None, out.read_text()
        found = re.search(r"Logs: (\S+)", out.read_text())
        assert found is not None
        logs = Path(found.group(1))

        def all_started() -> bool:
            pids[:] = descendants(proc.pid)
            return len(pids) >= CHILDREN

        await wait_until(all_started, limit=30, what=f"{CHILDREN} children")
        assert len(pids) == CHILDREN, pids
        demo = Demo(proc, out, list(pids), logs)
        # Running, not still starting: every service has reached the broker.
        services = ["aggregator.log", *(f"probe-{region}.log" for region in REGIONS)]
        await wait_until(
            lambda: all(demo.events(log, "mqtt_connected") for log in services),
            limit=30,
            what="every service connected to the broker",
        )
        yield demo
    finally:
        for pid in [proc.pid, *pids]:
            with suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)


async def all_gone(pids: list[int], limit: float) -> None:
    await wait_until(
        lambda: not [pid for pid in pids if alive(pid)],
        limit=limit,
        what=f"every child to be gone (left: {[pid for pid in pids if alive(pid)]})",
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
async def test_a_stop_signal_stops_every_child_in_order_and_exits_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM or SIGHUP: every child stopped, the aggregator before the probes, then exit 0."""
    async with running_demo(tmp_path) as demo:
        demo.proc.send_signal(sig)
        code = await asyncio.to_thread(demo.proc.wait, 60)
        assert code == 0, demo.out.read_text()[-2000:]
        await all_gone(demo.pids, limit=10)
        # The aggregator left first, so it judged nobody's departure; each probe said
        # goodbye through a broker still up (mqtt_close_incomplete otherwise).
        aggregator_stopped = demo.events("aggregator.log", "aggregator_stopped")
        assert aggregator_stopped, "the aggregator did not stop cleanly"
        for region in REGIONS:
            log = f"probe-{region}.log"
            stopping = demo.events(log, "probe_stopping")
            assert stopping, f"{region}'s probe did not stop cleanly"
            assert stopping[0]["ts"] >= aggregator_stopped[0]["ts"]
            assert demo.events(log, "probe_stopped")
            assert not demo.events(log, "mqtt_close_incomplete")


async def test_sigkill_takes_every_child_with_it(tmp_path: Path) -> None:
    """Killed outright, the demo cannot stop anything itself: its children die anyway."""
    async with running_demo(tmp_path) as demo:
        demo.proc.kill()
        await asyncio.to_thread(demo.proc.wait, 10)
        await all_gone(demo.pids, limit=15)


async def test_a_stop_signal_during_start_up_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM once the first child runs: what has started is stopped, and the demo exits 0."""
    out = tmp_path / "demo.out"
    proc = await asyncio.to_thread(start_demo, tmp_path)
    seen: set[int] = set()

    def started() -> bool:
        seen.update(descendants(proc.pid))
        return bool(seen) or proc.poll() is not None

    try:
        await wait_until(started, limit=60, what="the demo's first child")
        proc.send_signal(signal.SIGTERM)

        def exited() -> bool:
            seen.update(descendants(proc.pid))
            return proc.poll() is not None

        await wait_until(exited, limit=60, what="the demo to exit")
        assert proc.returncode == 0, out.read_text()[-2000:]
        await all_gone(sorted(seen), limit=10)
    finally:
        for pid in [proc.pid, *seen]:
            with suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
