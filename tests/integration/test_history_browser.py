"""History against real processes, then the pages in headless chromium.

An outage and its recovery; the badges as SVG, the public page without internals,
schemathesis over the history routes.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Broker, System, running_system
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

OUTPUT = ROOT / "test-output"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
async def recorded(broker: Broker, demo_target: str, tmp_path: Path) -> AsyncIterator[System]:
    """A system with history on that has been through one full outage and its recovery."""
    db = tmp_path / "history.sqlite"
    async with running_system(broker, demo_target, tmp_path, storage={"path": str(db)}) as system:
        await system.break_target("fail")
        await system.wait_verdict("down")
        await system.break_target("ok")
        await system.wait_verdict("up")
        yield system


async def get(system: System, path: str) -> Any:
    async with system.session.get(f"http://127.0.0.1:{system.port}{path}") as resp:
        assert resp.status == 200, (path, await resp.text())
        return await resp.json()


async def test_pages_badges_and_public_page_in_a_real_browser(recorded: System) -> None:
    from playwright.async_api import async_playwright

    system = recorded
    base = f"http://127.0.0.1:{system.port}"
    incidents = (await get(system, "/api/v1/incidents?target=api"))["incidents"]
    assert len(incidents) == 1
    incident = incidents[0]
    assert incident["open"] is False
    assert incident["peak"] == "down"
    assert {r["region"] for r in incident["regions"]} == {"us-east", "eu-west", "ap-southeast"}

    # Checks reach the hour's rollup when a minute closes: poll, bounded.
    async def rolled_up() -> bool:
        doc = await get(system, "/api/v1/targets/api/uptime")
        day = next(w for w in doc["windows"] if w["window"] == "24h")
        latency = await get(system, "/api/v1/targets/api/latency")
        return bool(
            day["down_s"] > 0
            and day["availability"] is not None
            and len(latency["regions"]) == 3
            and all(len(points) >= 1 for points in latency["regions"].values())
        )

    await wait_until_async(rolled_up, 150, what="a closed minute with the outage")
    async with system.session.post(
        f"{base}/api/v1/announcements", json={"text": "Investigating <b>checkout</b>"}
    ) as resp:
        assert resp.status == 200

    for name in ("status.svg", "uptime.svg?window=24h"):
        async with system.session.get(f"{base}/badge/api/{name}") as resp:
            assert resp.status == 200
            assert resp.content_type == "image/svg+xml"
            assert "max-age=60" in resp.headers["Cache-Control"]
            badge = ET.fromstring(await resp.text())  # noqa: S314 - our own output
        assert badge.tag == f"{SVG}svg"
        words = " ".join(t.text or "" for t in badge.iter(f"{SVG}text"))
        assert ("up" in words) if name == "status.svg" else ("%" in words), words

    chromium = shutil.which("chromium")
    assert chromium is not None, "Debian's chromium is installed by `make test`"
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            tab = await browser.new_page()
            await tab.goto(f"{base}/")
            banner = tab.locator(".banner")
            # Escaped: the markup in the text is shown, not obeyed.
            assert "Investigating <b>checkout</b>" in await banner.inner_text()
            await tab.screenshot(path=str(OUTPUT / "history-status-page.png"), full_page=True)

            await tab.goto(f"{base}/targets/api")
            text = await tab.locator("body").inner_text()
            assert "Uptime" in text
            assert "error budget" in text
            assert "Burn rate" in text
            # The latency chart: one p50 and one p95 line group per region, drawn.
            for region in ("us-east", "eu-west", "ap-southeast"):
                lines = tab.locator(f'svg g[data-region="{region}"]')
                assert await lines.count() >= 1, region
            box = await tab.locator("svg[aria-label^='Latency']").first.bounding_box()
            assert box is not None
            assert box["width"] > 300
            row = await tab.locator(f'tr[data-incident="{incident["id"]}"]').inner_text()
            assert "DOWN" in row
            assert "resolved" in row
            await tab.screenshot(path=str(OUTPUT / "history-target-page.png"), full_page=True)

            await tab.goto(f"{base}/public")
            public = await tab.locator("body").inner_text()
            assert "Service status" in public
            assert "api" in public
            assert "UP" in public
            # No internals: no error texts, no versions, no region names.
            assert "http_status" not in public
            assert "503" not in public
            assert "eu-west" not in public
            await tab.screenshot(path=str(OUTPUT / "history-public-page.png"), full_page=True)

            await tab.goto(f"{base}/badge/api/uptime.svg?window=24h")
            await tab.screenshot(path=str(OUTPUT / "history-uptime-badge.png"))
        finally:
            await browser.close()


async def test_schemathesis_finds_no_server_errors_in_the_history_routes(
    recorded: System, tmp_path: Path
) -> None:
    """Requests generated from the OpenAPI document never get a 5xx, history on."""
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis is not None, "schemathesis is part of the test extra"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            schemathesis,
            "run",
            f"http://127.0.0.1:{recorded.port}/api/v1/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "20",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
