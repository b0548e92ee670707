"""`vigil check URL` against local fakes of both OmniRoute generations and other services.

The command runs in-process with its argv (in a thread: it runs its own event loop while the
fakes are served on this one), plus once as a real process to prove the wiring. Without the
change every test fails: `check` is not a `vigil` subcommand.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from cli.check import Answer, choose, parse_snippet
from cli.main import main
from tests.conftest import Serve
from tests.omniroute_fakes import OmniRouteState, release_37_app, source_tree_app
from wire.result import ErrorKind

ROOT = Path(__file__).resolve().parents[2]
PING = "/api/health/ping"
MONITORING = "/api/monitoring/health"


async def vigil(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `vigil ARGV` in-process; its exit code and stdout."""
    code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out = await vigil(capsys, "check", *argv, "--json")
    return code, json.loads(out)


def generic_app() -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


def down_app() -> web.Application:
    async def down(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="Service Unavailable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", down)
    return app


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_source_tree_fits_omniroute_with_version(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """A source-tree build fits omniroute on ping, its version is read, the entry loads.

    The ping answers without the API key, so the entry sends it to the version endpoint only.
    """
    state = OmniRouteState(version="3.8.0-dev")
    url = await serve(source_tree_app(state))
    code, doc = await check_json(
        capsys, url, "--name", "omni", "--header", "Authorization: Bearer sk-test"
    )
    assert code == 0, doc
    assert (doc["profile"], doc["health_path"], doc["healthy"]) == ("omniroute", PING, True)
    assert (doc["version"], doc["version_error"]) == ("3.8.0-dev", None)
    assert [(a["path"], a["status"]) for a in doc["answers"]] == [(PING, 200), (MONITORING, 404)]
    # The credential is referred to, never written into the entry.
    assert "sk-test" not in doc["snippet"]
    assert doc["env"] == ["VIGIL_AUTHORIZATION"]
    target = parse_snippet(doc["snippet"], {"VIGIL_AUTHORIZATION": "Bearer sk-test"})
    assert (target.name, target.url, target.profile) == ("omni", url, "omniroute")
    assert target.health_path == PING
    assert target.headers == {}
    assert target.version_header_values() == {"Authorization": "Bearer sk-test"}
    assert "version_headers:" in doc["snippet"]
    # The entry's own check (the last request to each path) read the version with the key
    # and asked the ping without it.
    assert "Authorization" not in state.last_headers[PING]
    assert state.last_headers["/api/system/version"]["Authorization"] == "Bearer sk-test"


def guarded_ping_app() -> web.Application:
    """A service whose ping wants the key too: 401 without it, `ok` with it."""

    async def ping(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer sk-test":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get(PING, ping)
    return app


async def test_a_credential_the_health_endpoint_needs_stays_in_headers(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """When the health endpoint refuses a caller without the key, the entry sends it there."""
    url = await serve(guarded_ping_app())
    code, doc = await check_json(
        capsys, url, "--header", "Authorization: Bearer sk-test", "--header", "X-Trace: 1"
    )
    assert code == 0, doc
    target = parse_snippet(doc["snippet"], {"VIGIL_AUTHORIZATION": "Bearer sk-test"})
    assert target.headers == {"Authorization": "Bearer sk-test", "X-Trace": "1"}
    assert target.version_header_values() == {}


async def test_source_tree_without_key_says_why_no_version(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """Without the API key the service is still healthy (exit 0) and the version error is auth."""
    url = await serve(source_tree_app())
    code, doc = await check_json(capsys, url)
    assert code == 0
    assert (doc["version"], doc["version_error"], doc["version_status"]) == (None, "auth", 401)
    assert doc["version_hint"].startswith("auth (401) from /api/system/version:")
    assert "credentials" in doc["version_hint"]


async def test_release_37_pins_monitoring_health_with_body_version(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """3.7.x: ping 401, monitoring/health healthy: the entry pins it and the version is read."""
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    code, out = await vigil(capsys, "check", url)
    assert code == 0, out
    assert "health_path: /api/monitoring/health" in out
    assert "version: 3.7.9 (from the body of /api/monitoring/health)" in out
    assert "Authentication required (AUTH_001)" in out  # what the ping path answered
    snippet = out.split("probe.yaml:\n", 1)[1].split("\n\nexit", 1)[0]
    target = parse_snippet(snippet, {})
    assert (target.profile, target.health_path) == ("omniroute", MONITORING)
    assert target.name == "127.0.0.1"  # from the host
    # The version came from the health body: the cookie-only endpoint was never asked.
    assert state.hits["/api/system/version"] == 0


async def test_release_37_broken_fits_but_is_unhealthy(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """A 500 with OmniRoute's error body fits the profile and exits 1 with the probe's error."""
    url = await serve(release_37_app(OmniRouteState(healthy=False)))
    code, doc = await check_json(capsys, url)
    assert code == 1
    assert (doc["profile"], doc["health_path"], doc["healthy"]) == ("omniroute", MONITORING, False)
    assert doc["error"] == "HTTP 500, expected 200: Health check failed"
    assert doc["snippet"] is not None


async def test_503_everywhere_is_reachable_but_fits_nothing(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """A service answering 503 on every path is reachable and unhealthy: exit 1, no entry."""
    url = await serve(down_app())
    code, doc = await check_json(capsys, url)
    assert code == 1
    assert doc["profile"] is None
    assert doc["snippet"] is None
    assert not doc["unreachable"]
    assert {a["status"] for a in doc["answers"]} == {503}
    assert {a["excerpt"] for a in doc["answers"]} == {"Service Unavailable"}


async def test_closed_port_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: every endpoint fails to connect, exit 3."""
    code, out = await vigil(capsys, "check", f"http://127.0.0.1:{closed_port()}")
    assert code == 3
    assert "unreachable: cannot connect to 127.0.0.1" in out
    assert "unreachable: unreachable" not in out
    assert "probe.yaml:" not in out


async def test_generic_service_explains_no_profile_fits(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """A service with only /healthz: no profile's endpoint answered, exit 1, answers shown."""
    url = await serve(generic_app())
    code, out = await vigil(capsys, "check", url)
    assert code == 1
    assert "no profile fits: no profile's endpoint answered" in out
    assert "profile: generic with its own health_path" in out
    assert f"omniroute  {PING}" in out
    assert f"omniroute  {MONITORING}" in out
    assert out.count(" 404 ") == 2


async def test_excerpt_is_bounded_and_without_control_characters(
    capsys: pytest.CaptureFixture[str], serve: Serve
) -> None:
    """A hostile body shows as one bounded line with no escape or control character."""

    async def hostile(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="\x1b[2J\x1b]0;pwned\x07\r\nX" + "y" * 5000)

    app = web.Application()
    app.router.add_get(PING, hostile)
    url = await serve(app)
    code, doc = await check_json(capsys, url)
    assert code == 1
    excerpt = doc["answers"][0]["excerpt"]
    assert len(excerpt) <= 120
    assert excerpt.isprintable()
    assert "\x1b" not in excerpt


async def test_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL the probe would refuse is exit 2 with a message, not `unreachable`."""
    code = await asyncio.to_thread(main, ["check", "ftp://example.com"])
    assert code == 2
    assert "vigil check:" in capsys.readouterr().err


async def test_vigil_check_runs_as_a_process(serve: Serve) -> None:
    """`python -m cli.main check URL` is wired: a real process prints the entry and exits 0."""
    url = await serve(release_37_app())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "check",
        url,
        "--name",
        "omniroute",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    entry = yaml.safe_load(text.split("probe.yaml:\n", 1)[1].split("\n\nexit", 1)[0])
    assert entry["targets"][0] == {
        "name": "omniroute",
        "url": url,
        "profile": "omniroute",
        "health_path": MONITORING,
    }


def answer(
    path: str, status: int | None, kind: ErrorKind | None, *, shaped: bool = False
) -> Answer:
    return Answer("omniroute", path, path == PING, status, 1.0, "", kind, None, shaped)


@pytest.mark.parametrize(
    ("answers", "profile", "health_path", "healthy", "unreachable"),
    [
        ([answer(PING, 200, None), answer(MONITORING, 404, ErrorKind.HTTP_STATUS)],
         "omniroute", None, True, False),
        ([answer(PING, 401, ErrorKind.HTTP_STATUS), answer(MONITORING, 200, None)],
         "omniroute", MONITORING, True, False),
        ([answer(PING, 503, ErrorKind.HTTP_STATUS, shaped=True),
          answer(MONITORING, 404, ErrorKind.HTTP_STATUS)],
         "omniroute", None, False, False),
        ([answer(PING, 503, ErrorKind.HTTP_STATUS), answer(MONITORING, 503, ErrorKind.HTTP_STATUS)],
         None, None, False, False),
        ([answer(PING, None, ErrorKind.CONNECT), answer(MONITORING, None, ErrorKind.TIMEOUT)],
         None, None, False, True),
        ([answer(PING, None, ErrorKind.TLS), answer(MONITORING, None, ErrorKind.TLS)],
         None, None, False, False),
    ],
)  # fmt: skip
def test_choose_decides_from_answers_alone(
    answers: list[Answer],
    profile: str | None,
    health_path: str | None,
    healthy: bool,
    unreachable: bool,
) -> None:
    """The fit follows from the answers: pass first, then the profile's shape, else none."""
    fit = choose(answers)
    assert (fit.profile, fit.health_path, fit.healthy, fit.unreachable) == (
        profile,
        health_path,
        healthy,
        unreachable,
    )
