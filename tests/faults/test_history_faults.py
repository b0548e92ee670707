"""A history file that cannot be used: refused at start (exit 2), survived at run time.

Real `python -m aggregator` processes on 127.0.0.1. At start a bad `storage.path` is a config
error naming the file. At run time the file's writes fail (the process runs under a small
`RLIMIT_FSIZE`: every file write past it fails with EFBIG, even as root, where chmod would
not stop anything; CPython ignores SIGXFSZ, so the write returns an error instead of killing
the process). The failures must be counted and logged while the aggregator keeps judging.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aggregator.edges.historydb import HistoryDB
from demo.local import free_port, wait_port
from tests.integration.conftest import (
    REGIONS,
    Broker,
    System,
)
from tests.polling import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def write_config(tmp: Path, db: Path, mqtt_port: int, http_port: int, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "reconnect_max": "1s"},
        "listen": f"127.0.0.1:{http_port}",
        "regions": list(REGIONS),
        "startup_grace": "3s",
        "storage": {"path": str(db)},
        **extra,
    }
    path = tmp / "aggregator.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def corrupt(db: Path) -> None:
    db.write_bytes(os.urandom(64 * 1024))


def missing_dir(db: Path) -> None:
    """Nothing to do: the path's directory is made not to exist."""


def newer_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future(x)")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "subdir"),
    [
        pytest.param(corrupt, "", id="random-bytes"),
        pytest.param(missing_dir, "no/such/dir", id="missing-directory"),
        pytest.param(newer_schema, "", id="schema-newer-than-the-code"),
    ],
)
def test_unusable_history_file_is_exit_2_naming_it(
    tmp_path: Path, make: Callable[[Path], None], subdir: str
) -> None:
    """A corrupt file, a missing directory or a newer schema ends start-up with code 2."""
    db = (tmp_path / subdir if subdir else tmp_path) / "history.sqlite"
    make(db)
    # No broker is needed: the file is opened before the aggregator connects.
    config = write_config(tmp_path, db, free_port(), free_port())
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        timeout=20,
        check=False,
    )
    elapsed = time.monotonic() - started
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, (proc.returncode, stderr, proc.stdout[-2000:])
    assert elapsed < 10, elapsed
    assert str(db) in stderr, stderr
    assert "storage.path" in stderr, stderr


class PipedAggregator:
    """`python -m aggregator` under a file-size limit, its log read from a pipe (no limit)."""

    def __init__(self, config: Path, fsize: int) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Only a resource limit in the child: nothing that could deadlock before exec.
            preexec_fn=limit,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == name:
                found.append(doc)
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=20)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


async def test_write_failures_are_counted_and_the_aggregator_keeps_judging(
    broker: Broker, demo_target: str, tmp_path: Path
) -> None:
    """History writes failing at run time are counted and logged; verdicts and alerts go on."""
    db = tmp_path / "history.sqlite"
    # A file with the schema, so start-up writes little; the limit leaves room for the WAL's
    # first transaction (and the 32 KiB shared-memory file), not for many more.
    first = HistoryDB(db)
    first.open()
    first.close()
    fsize = max(db.stat().st_size, 32 * 1024) + 16 * 1024
    port = free_port()
    config = write_config(tmp_path, db, broker.port, port, client_id="vigil-aggregator-test")
    async with aiohttp.ClientSession() as session:
        s = System(broker, demo_target, tmp_path, session, port=port)
        agg = PipedAggregator(config, fsize)
        try:
            for region in REGIONS:
                s.start_probe(region)
            wait_port(port)
            await s.wait_verdict("up", limit=40)

            async def errors() -> float:
                return await s.metric("vigil_history_write_errors_total")

            # Outages make incidents to write; each transaction grows the WAL past the limit.
            for verdict, mode in (("down", "fail"), ("up", "ok"), ("down", "fail")):
                await s.break_target(mode)
                await s.wait_verdict(verdict, limit=30)

            async def failed() -> bool:
                return await errors() > 0

            # The open hour is written at least once a minute: failures come within ~70 s.
            await wait_until_async(failed, 90, what="a counted history write error")
            logged = agg.events("history_write_failed")
            assert logged, agg.lines[-20:]
            assert "error" in logged[0], logged[0]

            # Still alive, ready, and judging: the target recovers and goes down again.
            assert agg.proc.poll() is None, agg.lines[-20:]
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200, await resp.text()
            before = await errors()
            await s.break_target("ok")
            await s.wait_verdict("up", limit=30)
            await s.break_target("fail")
            await s.wait_verdict("down", limit=30)
            assert agg.events("alert"), "alerts (to the log) stopped"
            assert await errors() >= before
            async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200, await resp.text()
            assert agg.proc.poll() is None, agg.lines[-20:]
        finally:
            for proc in s.probes.values():
                if proc.proc.poll() is None:
                    proc.stop()
            agg.stop()
