"""`vigil demo --target URL`: its options reach each probe's config, named as in the config."""

from __future__ import annotations

import errno
import socket

import pytest
import yaml

from cli import demo
from cli.demo import REGIONS, TargetOptions, check_options, probe_config, target_config
from cli.main import build_parser, demo_options
from probe.config import TargetConfig, parse_config

URL = "http://127.0.0.1:3000"


def probe_target(argv: list[str]) -> TargetConfig:
    """The target a demo probe runs with, after the probe's own config parsing."""
    options = demo_options(build_parser().parse_args(["demo", "--target", URL, *argv]))
    config = probe_config(
        REGIONS[1], {"url": "mqtt://127.0.0.1:1883"}, "127.0.0.1:0", target_config(URL, options)
    )
    [target] = parse_config(yaml.safe_dump(config), source="demo", env={}).targets
    return target


def test_without_options_the_demo_watches_as_before() -> None:
    """No options: target `demo`, every 5 s with a 2 s timeout, the config's defaults beside."""
    assert target_config(URL, TargetOptions()) == {
        "name": "demo",
        "url": URL,
        "interval": "5s",
        "timeout": "2s",
    }


def test_each_option_reaches_the_probe_config() -> None:
    """Name, timing, paths, body check and headers arrive in the probe's target as given."""
    target = probe_target(
        [
            "--name", "shop",
            "--interval", "30s",
            "--timeout", "1500ms",
            "--health-path", "/healthz",
            "--version-path", "none",
            "--body", "state=green",
            "--header", "X-Team: platform",
            "--header", "Accept: application/json",
            "--version-header", "Cookie: auth_token=abc",
        ]
    )  # fmt: skip
    assert (target.name, target.url, target.interval, target.timeout) == ("shop", URL, 30.0, 1.5)
    assert (target.health_path, target.version_path) == ("/healthz", None)
    assert target.body is not None
    assert (target.body.json_field, target.body.equals) == ("state", "green")
    assert target.headers == {"X-Team": "platform", "Accept": "application/json"}
    assert {k: v.get_secret_value() for k, v in target.version_headers.items()} == {
        "Cookie": "auth_token=abc"
    }


@pytest.mark.parametrize(
    ("body", "equals"),
    [("status=ok", "ok"), ("healthy=true", True), ("code=0", 0), ("v=1.5", 1.5), ("s=", "")],
)
def test_body_value_is_typed_as_in_the_config_file(body: str, equals: object) -> None:
    """`--body healthy=true` checks for JSON `true`, as `equals: true` in the file would."""
    target = probe_target(["--body", body])
    assert target.body is not None
    assert target.body.equals == equals
    assert type(target.body.equals) is type(equals)


def test_body_any_turns_the_body_check_off() -> None:
    """`--body any` is the config's `body: null`."""
    assert probe_target(["--body", "any"]).body is None


@pytest.mark.parametrize("profile", ["generic", "omniroute"])
def test_profile_passes_through_and_fills_only_unset_keys(profile: str) -> None:
    """`--profile` is the target's `profile` key; an explicit path still wins over it."""
    entry = target_config(URL, TargetOptions(profile=profile))
    assert entry["profile"] == profile
    assert "health_path" not in entry  # left to the profile
    target = probe_target(["--profile", profile, "--health-path", "/custom"])
    assert (target.profile, target.health_path) == (profile, "/custom")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (TargetOptions(interval="soon"), "interval"),
        (TargetOptions(interval="2s", timeout="2s"), "timeout"),
        (TargetOptions(health_path="healthz"), "start with '/'"),
        (TargetOptions(profile="nginx"), "unknown profile"),
        (TargetOptions(headers=("no colon here",)), "'Name: value'"),
        (TargetOptions(body="state"), "FIELD=VALUE"),
        (TargetOptions(name="a b"), "name"),
    ],
)
def test_a_bad_option_is_refused_before_anything_starts(options: TargetOptions, says: str) -> None:
    """Options the probes would refuse are named by the demo itself."""
    problem = check_options(URL, options)
    assert problem is not None
    assert says in problem


def test_a_header_value_is_never_echoed_in_the_refusal() -> None:
    """A malformed header may be a secret pasted whole: the message does not repeat it."""
    problem = check_options(URL, TargetOptions(headers=("Bearer sk-secret",)))
    assert problem is not None
    assert "sk-secret" not in problem


def test_good_options_pass_the_check() -> None:
    """The defaults, and a full set of options, are accepted."""
    assert check_options(None, TargetOptions()) is None
    assert check_options(URL, TargetOptions(name="shop", profile="omniroute")) is None


@pytest.mark.parametrize("port", ["0", "70000", "-1", "http"])
def test_a_port_outside_1_to_65535_is_a_usage_error(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a traceback (70000), not a 30 s wait (0): exit 2 naming the option."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["demo", "--port", port])
    assert exited.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_a_busy_port_exits_2_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        assert demo.run(held.getsockname()[1], None) == 2
    assert "is in use; choose another --port" in capsys.readouterr().err


def test_a_port_that_cannot_be_bound_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A privileged port for a user is not 'in use' (the old message): the real reason."""
    denied = PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(demo, "bind_error", lambda _port: denied)
    assert demo.run(80, None) == 2
    assert "127.0.0.1:80 cannot be bound ([Errno 13] Permission denied)" in capsys.readouterr().err
