"""`vigil demo`: one command brings everything up; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from demo.local import free_port
from tests.integration.conftest import ROOT, find_alertmanager
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: it runs nothing and holds no port.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def start_demo(port: int, out: Path, broker: str) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "demo", "--port", str(port), "--broker", broker],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
async def test_vigil_demo_end_to_end(tmp_path: Path, broker: str) -> None:
    """Regions report, the page serves, a broken target pages, and SIGINT stops everything."""
    find_alertmanager()  # the demo uses a local Alertmanager when installed; CI installs it
    port = free_port()
    out = tmp_path / "demo.out"
    proc = await asyncio.to_thread(start_demo, port, out, broker)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until(
            lambda: "Ctrl-C stops everything" in out.read_text(), limit=30, what="the demo's banner"
        )
        demo = re.search(r"curl -X POST (http://127\.0\.0\.1:\d+)/_demo/state", out.read_text())
        assert demo is not None
        children = await asyncio.to_thread(children_of, proc.pid)
        assert len(children) >= 6  # broker, target, Alertmanager, aggregator, three probes
        # A request that hangs (something other than the aggregator on its port) fails
        # in seconds, not after aiohttp's default five minutes.
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def every_region_reports() -> bool:
                async with session.get(f"{base}/api/v1/status") as resp:
                    status = await resp.json()
                return bool(status["targets"]) and all(
                    r["last_result"] is not None for r in status["targets"][0]["regions"]
                )

            await wait_until_async(every_region_reports, 60, what="all three regions")
            async with session.get(f"{base}/") as resp:
                assert resp.status == 200
                assert "Vigil" in await resp.text()
            async with session.post(f"{demo.group(1)}/_demo/state", json={"mode": "fail"}) as r:
                assert r.status == 200

            async def service_down() -> bool:
                async with session.get(f"{base}/api/v1/alerts") as resp:
                    firing = (await resp.json())["firing"]
                return any(a["labels"]["alertname"] == "ServiceDown" for a in firing)

            await wait_until_async(service_down, 90, what="ServiceDown")
        await wait_until(lambda: "ALERT FIRING ServiceDown" in out.read_text(), limit=10)
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    assert [pid for pid in children if alive(pid)] == []


def test_vigil_demo_refuses_a_port_in_use() -> None:
    """The aggregator's port taken by anything else is a usage error before anything starts.

    Otherwise the aggregator fails to bind while the demo, seeing the port open, reports a
    page that is whatever else listens there.
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "demo", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{port} is in use" in done.stderr
    assert "Ctrl-C" not in done.stdout
