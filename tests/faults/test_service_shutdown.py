"""SIGTERM stops a service, exit 0, within its budget whatever broker and clients do.

SIGHUP is logged and changes nothing. Real probe and aggregator processes; the broker is
either absent (nothing listens on its port) or a real mosquitto frozen with SIGSTOP after
the service connected. A slow client holds a request whose body it never finishes, which
aiohttp waits on (its "lingering") for 10 s unless the shutdown cuts it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.local import free_port, wait_port
from tests.integration.conftest import Broker, Process
from tests.polling import wait_until

pytestmark = pytest.mark.integration

PROBE_SHUTDOWN_TIMEOUT = 2.0
# Well under the 5 s default, so a stop that ignored the config would overrun.
AGGREGATOR_SHUTDOWN_TIMEOUT = 1.0
# Beyond the budget: the interpreter's own exit on a busy two-core machine.
MARGIN = 2.5


def service_config(service: str, broker_url: str, port: int) -> dict[str, Any]:
    mqtt = {"url": broker_url, "reconnect_max": "1s"}
    if service == "probe":
        return {
            "region": "us-east",
            "probe_id": "us-east-1",
            "mqtt": mqtt,
            "listen": f"127.0.0.1:{port}",
            "shutdown_timeout": PROBE_SHUTDOWN_TIMEOUT,
            # Nothing listens on port 9: each check fails at once and is buffered.
            "targets": [
                {"name": "api", "url": "http://127.0.0.1:9", "interval": "1s", "timeout": "500ms"}
            ],
        }
    return {
        "mqtt": mqtt,
        "listen": f"127.0.0.1:{port}",
        "regions": ["us-east", "eu-west", "ap-southeast"],
        "client_id": "vigil-aggregator-shutdown-test",
        "shutdown_timeout": AGGREGATOR_SHUTDOWN_TIMEOUT,
    }


def budget(service: str) -> float:
    return PROBE_SHUTDOWN_TIMEOUT if service == "probe" else AGGREGATOR_SHUTDOWN_TIMEOUT


@contextlib.contextmanager
def running(service: str, broker_url: str, tmp_path: Path) -> Iterator[tuple[Process, int]]:
    """The service as a real process, listening; killed by PID if a test leaves it running."""
    port = free_port()
    config = tmp_path / f"{service}.yaml"
    config.write_text(yaml.safe_dump(service_config(service, broker_url, port)))
    proc = Process(["-m", service, "--config", str(config)], tmp_path / f"{service}.log")
    try:
        wait_port(port)
        yield proc, port
    finally:
        proc.stop(signal.SIGKILL, limit=10)  # a no-op but for closing its log once it exited


@contextlib.asynccontextmanager
async def slow_client(port: int) -> AsyncIterator[None]:
    """A request answered but whose promised body never finishes arriving."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nContent-Length: 1000\r\n\r\nab")
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        yield
    finally:
        writer.close()


async def stop_timed(proc: Process) -> tuple[int | None, float]:
    """SIGTERM; the exit code (None if still running after 30 s) and how long the exit took."""
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(proc.proc.wait, 30)
    return proc.proc.poll(), time.monotonic() - started


@contextlib.contextmanager
def frozen_broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto, to be frozen with SIGSTOP; thawed and stopped afterwards."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        if broker.proc is not None:
            broker.proc.send_signal(signal.SIGCONT)
        broker.stop()


@pytest.mark.parametrize("service", ["probe", "aggregator"])
async def test_sigterm_with_the_broker_down_exits_0_within_budget(
    tmp_path: Path, service: str
) -> None:
    """With no broker and a slow client, SIGTERM still ends in exit 0 within the budget."""
    with running(service, f"mqtt://127.0.0.1:{free_port()}", tmp_path) as (proc, port):
        async with slow_client(port):
            code, took = await stop_timed(proc)
    assert code == 0
    assert took < budget(service) + MARGIN, f"{service} took {took:.1f}s to stop"


@pytest.mark.parametrize("service", ["probe", "aggregator"])
async def test_sigterm_with_a_frozen_broker_exits_0_within_budget(
    tmp_path: Path, service: str
) -> None:
    """With the broker frozen mid-session and a slow client, SIGTERM ends in exit 0 in time."""
    with frozen_broker(tmp_path) as broker, running(service, broker.url, tmp_path) as (proc, port):
        await wait_until(lambda: proc.events("mqtt_connected"), limit=20, what="a connection")
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)
        async with slow_client(port):
            code, took = await stop_timed(proc)
    assert code == 0
    assert took < budget(service) + MARGIN, f"{service} took {took:.1f}s to stop"


@pytest.mark.parametrize("service", ["probe", "aggregator"])
async def test_sighup_is_logged_and_ignored(tmp_path: Path, service: str) -> None:
    """SIGHUP (a reload, by convention, which Vigil has not) leaves the service running."""
    with running(service, f"mqtt://127.0.0.1:{free_port()}", tmp_path) as (proc, port):
        proc.proc.send_signal(signal.SIGHUP)
        await wait_until(
            lambda: proc.events("sighup_ignored") or proc.proc.poll() is not None,
            limit=10,
            what="the SIGHUP to be handled",
        )
        assert proc.proc.poll() is None, f"SIGHUP ended the {service} ({proc.proc.returncode})"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
        code, _took = await stop_timed(proc)
    assert code == 0
