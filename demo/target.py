"""An aiohttp app that imitates the monitored service's health and version endpoints.

`POST /_demo/state` with `{"mode": "ok"|"fail"|"slow"|"badbody"|"invalid", "delay_ms": N,
"version": "x.y.z", "region": "us-east"}` changes what it answers; with `region`, only
requests carrying that `X-Vigil-Region` header (sent by every probe) are affected, so a
regional failure can be staged on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from aiohttp import web

Mode = Literal["ok", "fail", "slow", "badbody", "invalid"]
MODES: tuple[Mode, ...] = ("ok", "fail", "slow", "badbody", "invalid")


@dataclass(frozen=True)
class Behaviour:
    """How the demo answers one caller."""

    mode: Mode = "ok"
    delay_ms: float = 0.0
    version: str = "3.8.34"


@dataclass
class DemoState:
    """Global behaviour plus per-region overrides."""

    default: Behaviour
    authorization: str | None  # the whole Authorization value the version endpoint wants
    regions: dict[str, Behaviour]
    health_requests: int = 0
    version_requests: int = 0
    version_not_modified: int = 0

    def for_request(self, request: web.Request) -> Behaviour:
        """The behaviour for the region the request says it comes from."""
        return self.regions.get(request.headers.get("X-Vigil-Region", ""), self.default)


STATE = web.AppKey("state", DemoState)


async def health(request: web.Request) -> web.Response:
    """Imitate `GET /api/health/ping`."""
    state = request.app[STATE]
    state.health_requests += 1
    b = state.for_request(request)
    delay = b.delay_ms / 1000.0 if b.mode == "slow" or b.delay_ms else 0.0
    if delay:
        await asyncio.sleep(delay)
    if b.mode == "fail":
        return web.json_response(
            {"status": "error", "error": "database connection failed"}, status=503
        )
    if b.mode == "badbody":
        return web.json_response({"status": "degraded"})
    if b.mode == "invalid":
        return web.Response(text="<html>gateway error</html>", content_type="text/html")
    return web.json_response({"status": "ok", "timestamp": int(time.time() * 1000)})


async def version_endpoint(request: web.Request) -> web.Response:
    """Imitate `GET /api/system/version`: needs the API key, answers 304 to a matching ETag."""
    state = request.app[STATE]
    state.version_requests += 1
    if state.authorization is not None and request.headers.get("Authorization") != (
        state.authorization
    ):
        return web.json_response({"error": "unauthorized"}, status=401)
    b = state.for_request(request)
    etag = '"' + hashlib.sha256(b.version.encode()).hexdigest()[:16] + '"'
    if request.headers.get("If-None-Match") == etag:
        state.version_not_modified += 1
        return web.Response(status=304, headers={"ETag": etag})
    return web.json_response(
        {"current": b.version, "latest": b.version, "updateAvailable": False},
        headers={"ETag": etag},
    )


async def get_state(request: web.Request) -> web.Response:
    """Show the current behaviour."""
    state = request.app[STATE]
    return web.json_response(
        {
            "default": state.default.__dict__,
            "regions": {r: b.__dict__ for r, b in state.regions.items()},
            "health_requests": state.health_requests,
            "version_requests": state.version_requests,
            "version_not_modified": state.version_not_modified,
        }
    )


async def set_state(request: web.Request) -> web.Response:
    """Change the behaviour, globally or for one region; `{"reset": true}` clears all."""
    state = request.app[STATE]
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    if body.get("reset"):
        state.default, state.regions = Behaviour(), {}
        return await get_state(request)
    region = body.get("region")
    base = state.regions.get(region, state.default) if region else state.default
    mode = body.get("mode", base.mode)
    if mode not in MODES:
        raise web.HTTPBadRequest(text=f"mode must be one of {', '.join(MODES)}")
    try:
        updated = replace(
            base,
            mode=mode,
            delay_ms=float(body.get("delay_ms", base.delay_ms)),
            version=str(body.get("version", base.version)),
        )
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="delay_ms must be a number") from None
    if region:
        state.regions[str(region)] = updated
    else:
        state.default = updated
    return await get_state(request)


def make_app(
    *, api_key: str | None = None, authorization: str | None = None, version: str = "3.8.34"
) -> web.Application:
    """The demo target application."""
    app = web.Application()
    app[STATE] = DemoState(
        default=Behaviour(version=version),
        authorization=authorization or (f"Bearer {api_key}" if api_key is not None else None),
        regions={},
    )
    app.router.add_get("/api/health/ping", health)
    app.router.add_get("/api/system/version", version_endpoint)
    app.router.add_get("/_demo/state", get_state)
    app.router.add_post("/_demo/state", set_state)
    return app


def main() -> None:
    """Serve the demo target on loopback."""
    parser = argparse.ArgumentParser(prog="python -m demo.target")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--api-key", default=None, help="the key the version endpoint wants")
    keys.add_argument(
        "--authorization-file",
        type=Path,
        default=None,
        help="a file holding the whole Authorization value it wants (`Bearer <key>`, or any "
        "scheme), compared as the probes' version_auth_header_file sends it: a compose secret",
    )
    args = parser.parse_args()
    authorization = None
    if args.authorization_file is not None:
        where = f"--authorization-file: {args.authorization_file}"
        try:
            authorization = args.authorization_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            parser.exit(2, f"{where}: {exc.strerror or exc}\n")
        except UnicodeDecodeError:
            parser.exit(2, f"{where}: not UTF-8 text\n")
        if not authorization:
            parser.exit(2, f"{where}: empty\n")
    web.run_app(
        make_app(api_key=args.api_key, authorization=authorization),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
