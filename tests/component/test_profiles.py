"""The omniroute profile against local fakes of both OmniRoute generations (issue #12).

Each test names what breaks without the change it covers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from probe.check import Checker
from probe.config import TargetConfig, parse_config
from probe.verdict import error_detail, judge_health, parse_version
from tests.conftest import Serve
from tests.omniroute_fakes import (
    README_URL,
    OmniRouteState,
    readme_configs,
    release_37_app,
    source_tree_app,
)
from tests.polling import wait_until
from wire.result import MAX_ERROR_CHARS, ErrorKind, ProbeResult, VersionErrorKind

PING = "/api/health/ping"
MONITORING = "/api/monitoring/health"


def omniroute(url: str, **kw: Any) -> TargetConfig:
    fields: dict[str, Any] = {
        "name": "omniroute",
        "url": url,
        "profile": "omniroute",
        "interval": 5,
        "timeout": 2,
    }
    fields.update(kw)
    return TargetConfig.model_validate(fields)


async def check(checker: Checker, target: TargetConfig) -> ProbeResult:
    return await checker.run(target, time.time())


async def test_source_tree_answers_on_ping(checker: Checker, serve: Serve) -> None:
    """A source-tree build is ok on the ping path, with the version from the Bearer endpoint.

    Without the change: no `health_path` on the result, and `profile` is an unknown key.
    """
    state = OmniRouteState(version="3.8.0-dev")
    url = await serve(source_tree_app(state))
    result = await check(checker, omniroute(url, version_auth_header="Bearer sk-test"))
    assert result.ok, result.error
    assert result.health_path == PING
    assert result.version == "3.8.0-dev"
    assert result.version_error is None
    assert state.hits[MONITORING] == 0


async def test_release_37_pinned_reads_healthy_and_version_without_secret(
    checker: Checker, serve: Serve
) -> None:
    """Pinned to /api/monitoring/health, 3.7.x is ok on `healthy` with the body's version.

    Without the change: the default body check wants `ok` (body_mismatch) and no version
    can be read without a cookie.
    """
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    result = await check(checker, omniroute(url, health_path=MONITORING))
    assert result.ok, result.error
    assert result.health_path == MONITORING
    assert (result.version, result.version_error) == ("3.7.9", None)
    # The version came from the health body: no request to the cookie-only endpoint.
    assert state.hits["/api/system/version"] == 0
    assert state.hits[PING] == 0


async def test_ping_404_moves_to_monitoring_health_and_remembers(
    checker: Checker, serve: Serve
) -> None:
    """A 404 on the ping path (3.7.x with the dashboard cookie) moves to monitoring/health once.

    Without the change: the 404 is a failure on every check.
    """
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    target = omniroute(url, headers={"Cookie": f"auth_token={state.login()}"})
    first = await check(checker, target)
    assert first.ok, first.error
    assert (first.health_path, first.version) == (MONITORING, "3.7.9")
    second = await check(checker, target)
    assert second.ok
    assert second.health_path == MONITORING
    assert state.hits[PING] == 1  # remembered: the second check went straight there


async def test_upgrade_and_rollback_are_found_on_a_404(checker: Checker, serve: Serve) -> None:
    """After an upgrade the old endpoint's 404 moves the probe back to ping, and vice versa."""
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    target = omniroute(url, headers={"Cookie": f"auth_token={state.login()}"}, version_path=None)
    assert (await check(checker, target)).health_path == MONITORING
    state.generation = "source"  # upgrade: monitoring/health is gone in this fake
    upgraded = await check(checker, target)
    assert upgraded.ok, upgraded.error
    assert upgraded.health_path == PING
    state.generation = "3.7"  # rollback
    rolled_back = await check(checker, target)
    assert rolled_back.ok, rolled_back.error
    assert rolled_back.health_path == MONITORING


async def test_release_37_broken_is_a_failure_not_a_switch(checker: Checker, serve: Serve) -> None:
    """A 500 on monitoring/health fails the check with the body's error, and stays there.

    Without the change: `healthy` never passed here, and the error text was the same only
    by luck of a string `error`.
    """
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    target = omniroute(url, headers={"Cookie": f"auth_token={state.login()}"})
    assert (await check(checker, target)).ok
    state.healthy = False
    result = await check(checker, target)
    assert not result.ok
    assert result.error_kind is ErrorKind.HTTP_STATUS
    assert result.status_code == 500
    assert result.error == "HTTP 500, expected 200: Health check failed"
    assert result.health_path == MONITORING
    assert state.hits[PING] == 1  # only the first check's detection


HINT = "(a 3.7.x release answers on /api/monitoring/health: set health_path)"


async def test_401_on_ping_never_switches(checker: Checker, serve: Serve) -> None:
    """3.7.x without auth answers 401 on ping: a failure with its object error, never a switch.

    The error ends with a hint to pin monitoring/health. Without the change: the error text
    drops the object error (`HTTP 401, expected 200`), and says nothing of where to look.
    """
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    target = omniroute(url, version_path=None)
    for _ in range(2):
        result = await check(checker, target)
        assert not result.ok
        assert result.status_code == 401
        assert result.error == (
            f"HTTP 401, expected 200: Authentication required (AUTH_001) {HINT}"
        )
        assert result.health_path == PING
    assert state.hits[MONITORING] == 0


async def test_the_auth_hint_is_bounded_and_only_for_the_profiles_primary_401(
    checker: Checker, serve: Serve
) -> None:
    """A long 403 body is clipped between the status and the hint; others carry no hint.

    No hint for a target pinned to monitoring/health, a generic target, or a 503 on ping.
    """

    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"error": "x" * 1000}, status=403)

    app = web.Application()
    app.router.add_get(PING, refuse)
    app.router.add_get(MONITORING, refuse)
    url = await serve(app)
    long = await check(checker, omniroute(url, version_path=None))
    assert long.error is not None
    assert long.error.startswith("HTTP 403, expected 200: xxx")
    assert long.error.endswith(f"… {HINT}")
    assert len(long.error) <= MAX_ERROR_CHARS
    pinned = omniroute(url, version_path=None, health_path=MONITORING)
    generic = omniroute(url, version_path=None, profile="generic")
    for target in (pinned, generic):
        result = await check(checker, target)
        assert result.status_code == 403
        assert result.error is not None
        assert "3.7.x" not in result.error
    source = await serve(source_tree_app(OmniRouteState(healthy=False)))
    down = await check(checker, omniroute(source, version_path=None))
    assert down.error == "HTTP 503, expected 200: database unreachable"


async def test_source_tree_503_never_switches(checker: Checker, serve: Serve) -> None:
    """A 503 on ping is the service's failure, reported from ping with its error text."""
    state = OmniRouteState(version="3.8.0-dev")
    url = await serve(source_tree_app(state))
    state.healthy = False
    result = await check(checker, omniroute(url, version_path=None))
    assert not result.ok
    assert result.error == "HTTP 503, expected 200: database unreachable"
    assert result.health_path == PING
    assert state.hits[MONITORING] == 0


def login_target(url: str, password_file: Path, **kw: Any) -> TargetConfig:
    return omniroute(
        url,
        health_path=MONITORING,
        version_login={"url": "/api/auth/login", "password_file": str(password_file)},
        **kw,
    )


async def test_login_cookie_is_obtained_and_renewed(
    checker: Checker, serve: Serve, tmp_path: Path
) -> None:
    """version_login logs in once, again on expiry, and sends the cookie to version only.

    Without the change: `version_login` is an unknown key.
    """
    state = OmniRouteState(version="3.7.9")
    url = await serve(release_37_app(state))
    secret = tmp_path / "pw"
    secret.write_text(state.password + "\n")
    target = login_target(url, secret)
    for _ in range(2):
        result = await check(checker, target)
        assert (result.version, result.version_error) == ("3.7.9", None)
    assert state.logins == {"ok": 1}
    assert state.hits["/api/system/version"] == 2
    assert "Cookie" not in state.last_headers[MONITORING]
    assert state.last_headers["/api/system/version"]["Cookie"].startswith("auth_token=")
    state.expire_sessions()
    renewed = await check(checker, target)
    assert (renewed.version, renewed.version_error) == ("3.7.9", None)
    assert state.logins == {"ok": 2}
    # The refused request, then the retry with the new cookie.
    assert state.hits["/api/system/version"] == 4


async def test_wrong_password_backs_off(checker: Checker, serve: Serve, tmp_path: Path) -> None:
    """A refused login is tried once per backoff, not on every check; health is unaffected.

    Without the change: `version_login` is an unknown key.
    """
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    secret = tmp_path / "pw"
    secret.write_text("wrong")
    target = login_target(url, secret)
    for _ in range(3):
        result = await check(checker, target)
        assert result.ok, result.error
        # The health body still carries the version.
        assert result.version == "3.7.9"
    assert state.logins == {"refused": 1}
    assert state.hits["/api/system/version"] == 0


async def test_bearer_key_refused_on_release_37_keeps_the_body_version(
    checker: Checker, serve: Serve
) -> None:
    """A Bearer key (403 on 3.7.x's version endpoint) does not lose the health body's version.

    Without the change: the health check wants `ok` (body_mismatch) and the version is
    lost to `auth`.
    """
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    target = omniroute(url, health_path=MONITORING, version_auth_header="Bearer sk-test")
    result = await check(checker, target)
    assert result.ok, result.error
    assert state.hits["/api/system/version"] == 1  # asked, because credentials were given
    assert (result.version, result.version_error) == ("3.7.9", None)


async def test_version_headers_from_env_go_to_the_version_endpoint_only(
    checker: Checker, serve: Serve
) -> None:
    """`version_headers` values (with ${VAR}) reach the version endpoint and nothing else.

    Without the change: `version_headers` is an unknown key.
    """
    state = OmniRouteState(version="3.8.0-dev")
    url = await serve(source_tree_app(state))
    text = f"""
region: us-east
probe_id: us-east-1
targets:
  - name: omniroute
    url: "{url}"
    profile: omniroute
    version_headers: {{Authorization: "Bearer ${{KEY}}"}}
"""
    config = parse_config(text, source="probe.yaml", env={"KEY": "sk-test"})
    result = await check(checker, config.targets[0])
    assert (result.version, result.version_error) == ("3.8.0-dev", None)
    assert "Authorization" not in state.last_headers[PING]
    assert "sk-test" not in repr(config)


async def test_first_slow_check_is_not_slow(checker: Checker, serve: Serve) -> None:
    """A cold first answer over the budget is not `slow`; a warm one is.

    Without the change: the first check (a 300 ms cold start against a 50 ms budget) is
    marked slow.
    """
    state = OmniRouteState(version="3.8.0-dev", first_delay=0.3)
    url = await serve(source_tree_app(state))
    target = omniroute(url, version_path=None)
    cold = await check(checker, target)
    assert cold.ok
    assert cold.duration_ms >= 300
    assert not cold.slow
    state.delay = 0.1
    warm = await check(checker, target)
    assert warm.ok
    assert warm.slow
    state.healthy, state.delay = False, 0.0
    assert not (await check(checker, target)).ok
    state.healthy, state.delay = True, 0.1
    after_failure = await check(checker, target)
    assert after_failure.ok
    assert not after_failure.slow


async def test_a_failing_fallback_is_reported_but_not_remembered(
    checker: Checker, serve: Serve
) -> None:
    """Ping 404, monitoring/health 500: the 500 is the check's failure; detection stays open.

    Remembering a failing endpoint would keep a probe on it after the service heals
    elsewhere (an expired cookie turning the ping path from 404 into 401 would then never
    switch back): a false page that never clears.
    """
    state = OmniRouteState(healthy=False)
    url = await serve(release_37_app(state))
    target = omniroute(url, headers={"Cookie": f"auth_token={state.login()}"})
    broken = await check(checker, target)
    assert not broken.ok
    assert (broken.status_code, broken.health_path) == (500, MONITORING)
    assert broken.error == "HTTP 500, expected 200: Health check failed"
    await check(checker, target)
    assert state.hits[PING] == 2  # not remembered: the next check looked again
    state.healthy = True
    healed = await check(checker, target)
    assert healed.ok
    assert healed.health_path == MONITORING
    await check(checker, target)
    assert state.hits[PING] == 3  # a passing endpoint is remembered


async def test_a_hanging_fallback_is_a_timeout_not_a_404(checker: Checker, serve: Serve) -> None:
    """Ping 404 and monitoring/health hanging: the result says timeout, on monitoring/health."""
    state = OmniRouteState()
    url = await serve(release_37_app(state))
    # Ping's 404 comes well in time even on a loaded machine (0.3 s of a 2 s budget: with a
    # 0.5 s budget it sometimes timed out on the ping itself in CI).
    target = omniroute(url, headers={"Cookie": f"auth_token={state.login()}"}, timeout=2.0)
    state.delay = 0.3

    # The fake delays every request alike: make only the second (monitoring) one hang by
    # raising the delay once the ping request has been served.
    task = asyncio.create_task(check(checker, target))
    await wait_until(lambda: state.hits[PING] == 1, 10, "the ping request")
    state.delay = 4.0  # past the 2 s budget (the server holds it until teardown)
    result = await task
    assert not result.ok
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.health_path == MONITORING


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    """A body nested deeper than Python's stack is not JSON to the probe, never an exception."""
    deep = b"[" * 50_000
    assert error_detail(deep) is None
    failure = judge_health(200, deep, expected_status=200, json_field="status", equals="ok")
    assert failure is not None
    assert failure.kind is ErrorKind.INVALID_BODY
    assert parse_version(200, deep, "version") == (None, VersionErrorKind.INVALID_BODY)


async def test_a_failed_login_keeps_its_kind_during_the_backoff(
    checker: Checker, serve: Serve, tmp_path: Path
) -> None:
    """A login that could not connect is reported as connect while waiting, not as auth."""
    url = await serve(source_tree_app(OmniRouteState()))
    secret = tmp_path / "pw"
    secret.write_text("s3cret-pw")
    target = omniroute(
        url,
        version_login={"url": "https://127.0.0.1:1/api/auth/login", "password_file": str(secret)},
    )
    first = await check(checker, target)
    second = await check(checker, target)  # inside the backoff: no login tried
    assert first.ok
    assert (first.version_error, second.version_error) == (
        VersionErrorKind.CONNECT,
        VersionErrorKind.CONNECT,
    )
    assert (first.version_status, second.version_status) == (None, None)  # no answer came


async def test_version_errors_carry_the_status(
    checker: Checker, serve: Serve, tmp_path: Path
) -> None:
    """A version error names the status that caused it: 401, 403, a refused login, a 500.

    Without the change: every one of them is a bare `auth` or `http_status`.
    """
    source = await serve(source_tree_app(OmniRouteState(version="3.8.0-dev")))
    no_key = await check(checker, omniroute(source))
    assert (no_key.version_error, no_key.version_status) == (VersionErrorKind.AUTH, 401)

    state = OmniRouteState()
    release = await serve(release_37_app(state))
    healthy = {"json_field": "status", "equals": "healthy"}
    # A body of its own pins the endpoint without its version field: the version endpoint
    # is the only source, and 3.7.x refuses a Bearer key there with 403.
    bearer = omniroute(
        release, health_path=MONITORING, body=healthy, version_auth_header="Bearer sk-test"
    )
    refused = await check(checker, bearer)
    assert (refused.version_error, refused.version_status) == (VersionErrorKind.AUTH, 403)

    secret = tmp_path / "pw"
    secret.write_text("wrong")
    login = login_target(release, secret, body=healthy)
    for _ in range(2):  # the second inside the backoff, reporting the same login failure
        result = await check(checker, login)
        assert (result.version_error, result.version_status) == (VersionErrorKind.AUTH, 401)
    assert state.logins == {"refused": 1}

    state.healthy = False  # the version carried by monitoring/health's 500 body
    broken = await check(checker, omniroute(release, health_path=MONITORING))
    assert (broken.version_error, broken.version_status) == (VersionErrorKind.HTTP_STATUS, 500)


async def test_readme_configs_watch_their_generation(
    checker: Checker, serve: Serve, tmp_path: Path
) -> None:
    """Each README OmniRoute config, its URL swapped for its fake's, is ok with the version.

    Without the README's `health_path` the 3.7.x config fails on the ping path's 401; a
    version credential that does not reach its endpoint loses the source tree's version.
    """
    configs = readme_configs()
    source = OmniRouteState(version="3.8.0-dev")
    release = OmniRouteState(version="3.7.9")
    password = tmp_path / "omniroute-password"
    password.write_text(release.password + "\n")
    env = {
        "OMNIROUTE_API_KEY": source.api_key,
        "OMNIROUTE_PASSWORD_FILE": str(password),
        "PROBE_PORT": "0",
    }
    cases = [
        (configs["source"], await serve(source_tree_app(source)), PING, "3.8.0-dev"),
        (configs["3.7"], await serve(release_37_app(release)), MONITORING, "3.7.9"),
    ]
    for text, url, path, version in cases:
        assert README_URL in text
        config = parse_config(text.replace(README_URL, url), source="README.md", env=env)
        [target] = config.targets
        result = await check(checker, target)
        assert result.ok, result.error
        assert (result.health_path, result.version, result.version_error) == (path, version, None)
    # The 3.7.x version came through the login the config names.
    assert release.logins == {"ok": 1}
    assert release.last_headers["/api/system/version"]["Cookie"].startswith("auth_token=")
    assert "Authorization" not in source.last_headers[PING]
