"""The operator surface against real processes: `vigil status`, schemathesis, a browser."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, System
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

OUTPUT = ROOT / "test-output"


async def vigil_status(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "status", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "VIGIL_TOKEN": ""},
    )


async def test_vigil_status_table_and_exit_codes(system: System) -> None:
    """0 when all up, 1 degraded, 2 down, 3 unreachable; the table names regions and errors."""
    url = f"http://127.0.0.1:{system.port}"
    summary = await vigil_status("--url", url)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.splitlines() == [
        "1 target: 0 down, 0 degraded, 0 unknown, 1 up",
        "(1 up not listed; --all lists every target)",
    ]
    up = await vigil_status("--url", url, "--all")
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert lines[0].split() == [
        "TARGET",
        "VERDICT",
        "SINCE",
        "us-east",
        "eu-west",
        "ap-southeast",
        "LAST",
        "ERROR",
    ]
    assert lines[1].startswith("api")
    assert "ok +" in lines[1]
    assert "3.8.34" in lines[1]

    await system.break_target("fail", region="eu-west")
    await system.wait_verdict("degraded")
    degraded = await vigil_status("--url", url)
    assert degraded.returncode == 1
    assert "FAIL x" in degraded.stdout
    assert "eu-west: http_status: HTTP 503" in degraded.stdout

    await system.break_target("fail")
    await system.wait_verdict("down")
    down = await vigil_status("--url", url, "--target", "api", "--json")
    assert down.returncode == 2
    assert json.loads(down.stdout)["verdict"] == "down"

    unreachable = await vigil_status("--url", "http://127.0.0.1:1")
    assert unreachable.returncode == 3
    assert "cannot reach the aggregator" in unreachable.stderr


async def test_schemathesis_finds_no_server_errors(system: System, tmp_path: Path) -> None:
    """Requests generated from the OpenAPI document never get a 5xx from a live aggregator."""
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis is not None, "schemathesis is part of the test extra"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            schemathesis,
            "run",
            f"http://127.0.0.1:{system.port}/api/v1/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
        ],
        # Schemathesis writes its run cache under the working directory: keep it out of the tree.
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


async def test_status_page_in_a_real_browser(system: System) -> None:
    """Headless chromium shows the grid with each region's state and the verdict."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    assert chromium is not None, "Debian's chromium is installed by `make test`"
    await system.break_target("fail", region="eu-west")
    await system.wait_verdict("degraded")

    async def sparklines_drawn() -> bool:
        detail = await system.session.get(f"http://127.0.0.1:{system.port}/api/v1/targets/api")
        history = (await detail.json())["history"]
        return all(len(points) >= 3 for points in history.values())

    await wait_until_async(sparklines_drawn, 20, what="three results per region")
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            tab = await browser.new_page()
            await tab.goto(f"http://127.0.0.1:{system.port}/")
            row = tab.locator('tr[data-target="api"]')
            assert "DEGRADED" in await row.locator("td.verdict").inner_text()
            assert "FAILING" in await row.locator('td[data-region="eu-west"]').inner_text()
            assert "OK" in await row.locator('td[data-region="us-east"]').inner_text()
            assert await row.locator("svg").count() == 3
            png = await tab.screenshot(path=str(OUTPUT / "status-page.png"), full_page=True)
            assert png.startswith(b"\x89PNG")
            await tab.click('a[href="/targets/api"]')
            assert "1 failing of 3 fresh regions" in await tab.locator("body").inner_text()
            await tab.screenshot(path=str(OUTPUT / "target-page.png"), full_page=True)
        finally:
            await browser.close()
