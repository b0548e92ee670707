"""Local fakes of OmniRoute's two generations, answering as the real ones do (issue #12).

`source_tree_app` is a build from the source tree: `GET /api/health/ping` answers 200
`{"status":"ok"}` (503 when broken) and `GET /api/system/version` wants a Bearer API key and
sends an ETag. `release_37_app` is the published npm package 3.7.x: every route but the public
ones answers 401 `{"error":{"code":"AUTH_001",...}}` without auth, so `/api/health/ping` (which
does not exist there) is 401 without auth and a 404 HTML page with the dashboard cookie;
`/api/monitoring/health` is public and says `healthy` with the version; `/api/system/version`
is 403 `Invalid management token` with a Bearer key and 200 only with the cookie from
`POST /api/auth/login`, without an ETag.

Both serve one `OmniRouteState`, which a test changes as it goes: break the service, expire
the sessions, switch the generation (an upgrade or a rollback), delay the first request.

`readme_configs` gives the README's "Watching OmniRoute" configs, one per generation, for
the tests that run them as written.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

Generation = Literal["source", "3.7"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

README = Path(__file__).resolve().parents[1] / "README.md"
# The URL the README's configs watch, replaced by a fake's in tests.
README_URL = "http://127.0.0.1:20128"

PUBLIC_37 = frozenset({"/api/monitoring/health", "/api/auth/login"})
STATE: web.AppKey[OmniRouteState] = web.AppKey("omniroute_state")


@dataclass
class OmniRouteState:
    """What the fake answers, and what it saw."""

    generation: Generation = "3.7"
    version: str = "3.7.9"
    healthy: bool = True
    api_key: str = "sk-test"
    password: str = "s3cret-pw"
    # Valid `auth_token` cookie values; `expire_sessions` empties it.
    sessions: set[str] = field(default_factory=set)
    # Seconds added to the first request after start (a cold Node process: ~1.3 s).
    first_delay: float = 0.0
    # Seconds added to every request.
    delay: float = 0.0
    served: int = 0
    # Requests by path, logins by outcome, and the headers of each path's last request.
    hits: Counter[str] = field(default_factory=Counter)
    logins: Counter[str] = field(default_factory=Counter)
    last_headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def expire_sessions(self) -> None:
        """Every issued cookie stops working, as after 30 days or a password change."""
        self.sessions.clear()

    def login(self) -> str:
        """A valid cookie value, as a browser would get from the login page."""
        token = secrets.token_urlsafe(24)
        self.sessions.add(token)
        return token


def _auth_001() -> web.Response:
    return web.json_response(
        {
            "error": {
                "code": "AUTH_001",
                "message": "Authentication required",
                "correlation_id": secrets.token_hex(8),
            }
        },
        status=401,
    )


@web.middleware
async def _common(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    state.hits[request.path] += 1
    state.last_headers[request.path] = dict(request.headers)
    state.served += 1
    delay = state.delay + (state.first_delay if state.served == 1 else 0.0)
    if delay:
        await asyncio.sleep(delay)
    if state.generation == "3.7" and request.path not in PUBLIC_37:
        token = request.cookies.get("auth_token")
        if token is None or token not in state.sessions:
            if request.path == "/api/system/version" and "Authorization" in request.headers:
                # API keys work on /api/v1/*, not on management routes.
                return web.json_response({"error": "Invalid management token"}, status=403)
            return _auth_001()
    return await handler(request)


async def _ping(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.generation != "source":
        return _not_found()
    if not state.healthy:
        return web.json_response({"status": "error", "error": "database unreachable"}, status=503)
    return web.json_response({"status": "ok"})


async def _monitoring_health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.generation != "3.7":
        return _not_found()
    if not state.healthy:
        return web.json_response({"status": "error", "error": "Health check failed"}, status=500)
    return web.json_response(
        {
            "status": "healthy",
            "timestamp": "2026-11-27T10:00:00.000Z",
            "version": state.version,
            "uptime": 1234.5,
            "providers": {"total": 3, "active": 3},
        }
    )


async def _version(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {"current": state.version, "latest": state.version, "updateAvailable": False}
    if state.generation == "3.7":
        # Reached only with a valid cookie (see _common); no ETag.
        return web.json_response({**body, "channel": "npm"})
    if request.headers.get("Authorization") != f"Bearer {state.api_key}":
        return web.json_response({"error": "unauthorized"}, status=401)
    etag = f'"{state.version}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.json_response(body, headers={"ETag": etag})


async def _login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        sent = await request.json()
    except ValueError:
        sent = None
    if not isinstance(sent, dict) or sent.get("password") != state.password:
        state.logins["refused"] += 1
        return web.json_response({"error": "Invalid password"}, status=401)
    state.logins["ok"] += 1
    resp = web.json_response({"success": True})
    resp.set_cookie("auth_token", state.login(), httponly=True, samesite="Lax", max_age=30 * 86400)
    return resp


def _not_found() -> web.Response:
    return web.Response(
        status=404,
        text="<!DOCTYPE html><html><body><h1>404</h1>This page could not be found.</body></html>",
        content_type="text/html",
    )


def omniroute_app(state: OmniRouteState) -> web.Application:
    """An OmniRoute fake of `state.generation`, switchable while it runs."""
    app = web.Application(middlewares=[_common])
    app[STATE] = state
    app.router.add_get("/api/health/ping", _ping)
    app.router.add_get("/api/monitoring/health", _monitoring_health)
    app.router.add_get("/api/system/version", _version)
    app.router.add_post("/api/auth/login", _login)
    return app


def source_tree_app(state: OmniRouteState | None = None) -> web.Application:
    """OmniRoute built from its source tree (ping route, Bearer version with ETag)."""
    state = state or OmniRouteState(version="3.8.0-dev")
    state.generation = "source"
    return omniroute_app(state)


def release_37_app(state: OmniRouteState | None = None) -> web.Application:
    """The published npm package 3.7.x (no ping route, cookie-only version)."""
    state = state or OmniRouteState()
    state.generation = "3.7"
    return omniroute_app(state)


def readme_section(title: str) -> str:
    """The README's `## title` section, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def readme_configs() -> dict[Generation, str]:
    """The probe configs of "Watching OmniRoute": the source tree's, then the 3.7.x one."""
    snippets = re.findall(r"```yaml\n(.*?)```", readme_section("Watching OmniRoute"), re.S)
    assert len(snippets) == 2, "one config per generation"
    return {"source": snippets[0], "3.7": snippets[1]}
