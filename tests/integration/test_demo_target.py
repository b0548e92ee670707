"""`vigil demo --target URL` with options watches a real service as told, end to end."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cli import status as cli_status
from demo.local import free_port
from tests.integration.conftest import ROOT
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration

COOKIE = "auth_token=t0k"


class Service:
    """A service with its own paths, body and cookie-only version, as a real one may have."""

    def __init__(self) -> None:
        self.accept_cookie = True
        self.seen_headers: list[str | None] = []

    async def health(self, request: web.Request) -> web.Response:
        self.seen_headers.append(request.headers.get("X-Team"))
        return web.json_response({"state": "green"})

    async def version(self, request: web.Request) -> web.Response:
        if not self.accept_cookie or request.headers.get("Cookie") != COOKIE:
            return web.json_response({"error": "Invalid management token"}, status=403)
        return web.json_response({"current": "3.7.9"})


@pytest.fixture
async def service() -> AsyncIterator[tuple[Service, str]]:
    svc = Service()
    app = web.Application()
    app.router.add_get("/svc/healthz", svc.health)
    app.router.add_get("/svc/version", svc.version)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield svc, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def start_demo(tmp_path: Path, port: int, url: str) -> subprocess.Popen[bytes]:
    args = [
        *("--port", str(port), "--target", url, "--name", "shop", "--profile", "generic"),
        *("--interval", "1s", "--timeout", "500ms", "--health-path", "/svc/healthz"),
        *("--body", "state=green", "--version-path", "/svc/version"),
        *("--header", "X-Team: platform", "--version-header", f"Cookie: {COOKIE}"),
    ]
    with (tmp_path / "demo.out").open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "demo", *args],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )


async def test_demo_watches_a_service_by_its_options(
    tmp_path: Path, service: tuple[Service, str]
) -> None:
    """Custom paths, body, headers and name work, and a version error shows in `vigil status`."""
    svc, url = service
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "demo.out"
    proc = await asyncio.to_thread(start_demo, tmp_path, port, url)
    try:
        await wait_until(
            lambda: "Ctrl-C stops everything" in out.read_text() or proc.poll() is not None,
            limit=60,
            what="the demo's banner",
        )
        assert proc.poll() is None, out.read_text()
        async with aiohttp.ClientSession() as session:

            async def shop() -> dict[str, Any]:
                async with session.get(f"{base}/api/v1/targets/shop") as resp:
                    return dict(await resp.json()) if resp.status == 200 else {"regions": []}

            async def regions() -> list[dict[str, Any]]:
                return list((await shop())["regions"])

            async def up_with_version() -> bool:
                detail = await shop()
                return detail.get("verdict") == "up" and all(
                    r["version"] == "3.7.9" for r in detail["regions"]
                )

            await wait_until_async(up_with_version, 60, what="up, three regions at 3.7.9")
            assert set(svc.seen_headers) == {"platform"}
            svc.accept_cookie = False

            async def auth_error_everywhere() -> bool:
                return all(
                    r["version_error"] == "auth" and r["version_status"] == 403
                    for r in await regions()
                )

            await wait_until_async(auth_error_everywhere, 30, what="version_error auth")
        printed = io.StringIO()
        code = await asyncio.to_thread(cli_status.run, base, "shop", False, None, printed)
        assert code == cli_status.EXIT_UP
        assert printed.getvalue().count("3.7.9 (last fetch: auth (403))") == 3
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 60)
    assert code == 0
