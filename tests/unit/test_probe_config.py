"""Probe config validation: defaults, env overrides, and one clear message per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.cli import main
from probe.config import load_config, parse_config
from runtime.config import ConfigError, parse_duration

MINIMAL = """
region: us-east
probe_id: us-east-1
targets:
  - name: api
    url: "https://api.example.com/"
"""


def parse(text: str, env: dict[str, str] | None = None) -> object:
    return parse_config(text, source="probe.yaml", env=env or {})


def test_defaults_match_the_runbook() -> None:
    """A minimal config gets the documented defaults."""
    config = parse_config(MINIMAL, source="probe.yaml", env={})
    target = config.targets[0]
    assert target.url == "https://api.example.com"
    assert target.health_url == "https://api.example.com/api/health/ping"
    assert target.version_url == "https://api.example.com/api/system/version"
    assert target.expected_status == 200
    assert target.body is not None
    assert (target.body.json_field, target.body.equals) == ("status", "ok")
    assert target.version_field == "current"
    assert (target.interval, target.timeout, target.latency_budget) == (10.0, 5.0, 0.05)
    assert target.tls_verify is True
    assert target.reuse_connections is False
    assert config.listen == "127.0.0.1:9101"
    assert config.buffer_size == 10_000
    assert config.mqtt is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(10, 10.0), (2.5, 2.5), ("500ms", 0.5), ("10s", 10.0), ("1m30s", 90.0), ("1h", 3600.0)],
)
def test_durations(value: object, seconds: float) -> None:
    """Durations accept seconds or unit strings."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["ten", "10x", "", "-1s", 0, True, "1s 2s", None])
def test_bad_durations(value: object) -> None:
    """Anything but a positive duration is refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("region: us-east\nprobe_id: p\ntargets: []\n", "targets: List should have at least 1"),
        ("probe_id: p\ntargets: [{name: a, url: 'http://x'}]\n", "region: Field required"),
        (
            "region: us-east\nprobe_id: p\ntargets: [{name: a, url: 'http://x', intervall: 5}]\n",
            "targets[0].intervall: Extra inputs are not permitted",
        ),
        (
            "region: us-east\nprobe_id: p\ntargets: [{name: a, url: 'ftp://x'}]\n",
            "targets[0].url: Value error, url must be an absolute http",
        ),
        (
            "region: us-east\nprobe_id: p\ntargets: [{name: a, url: 'http://x', timeout: 10s}]\n",
            "timeout (10s) must be shorter than interval (10s)",
        ),
        (
            "region: us-east\nprobe_id: p\ntargets: [{name: a, url: 'http://x', interval: soon}]\n",
            "targets[0].interval: Value error, invalid duration 'soon'",
        ),
        (
            "region: us/east\nprobe_id: p\ntargets: [{name: a, url: 'http://x'}]\n",
            "region: String should match pattern",
        ),
        (
            "region: r\nprobe_id: p\ntargets: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]\n",
            "duplicate target name 'a'",
        ),
        (
            "region: r\nprobe_id: p\ntargets: [{name: a, url: 'http://x', health_path: ping}]\n",
            "targets[0].health_path: Value error, path must start with '/'",
        ),
        (
            "region: r\nprobe_id: p\nmqtt: {url: 'http://broker'}\ntargets: [{name: a, url: 'http://x'}]\n",
            "mqtt.url: Value error, url must look like mqtt://",
        ),
        ("region: r\nprobe_id: p\nlisten: 9101\ntargets: [{name: a, url: 'http://x'}]\n", "listen"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("region: [unclosed\n", "not valid YAML"),
        (
            "region: r\nprobe_id: p\ntargets: [{name: a, url: 'http://x', "
            "version_auth_header: 'Bearer ${NOPE}'}]\n",
            "targets[0].version_auth_header: environment variable NOPE is not set",
        ),
    ],
)
def test_each_bad_input_has_its_message(text: str, message: str) -> None:
    """Every kind of mistake names the file and the key."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value).startswith("probe.yaml:")
    assert message in str(info.value)


def test_env_overrides_region_probe_and_broker_secrets() -> None:
    """Region, probe id and broker credentials come from the environment when set."""
    text = MINIMAL + "mqtt: {url: 'mqtt://127.0.0.1:1883', username: file-user}\n"
    config = parse_config(
        text,
        source="probe.yaml",
        env={
            "VIGIL_REGION": "eu-west",
            "VIGIL_PROBE_ID": "eu-west-7",
            "VIGIL_MQTT_USERNAME": "probe-eu-west",
            "VIGIL_MQTT_PASSWORD": "hunter2",
        },
    )
    assert (config.region, config.probe_id) == ("eu-west", "eu-west-7")
    assert config.mqtt is not None
    assert config.mqtt.username == "probe-eu-west"
    assert config.mqtt.resolved_password() == "hunter2"
    assert "hunter2" not in repr(config)


def test_region_flag_beats_env() -> None:
    """--region wins over VIGIL_REGION."""
    config = parse_config(MINIMAL, source="p", env={"VIGIL_REGION": "eu"}, region="ap")
    assert config.region == "ap"


def test_api_key_expanded_and_never_shown() -> None:
    """`${VAR}` in the auth header is expanded, and the secret stays out of reprs and errors."""
    text = MINIMAL + "    version_auth_header: 'Bearer ${OMNIROUTE_API_KEY}'\n"
    config = parse_config(text, source="p", env={"OMNIROUTE_API_KEY": "sk-secret"})
    assert config.targets[0].auth_header() == "Bearer sk-secret"
    assert "sk-secret" not in repr(config)
    bad = text + "    interval: nope\n"
    with pytest.raises(ConfigError) as info:
        parse_config(bad, source="p", env={"OMNIROUTE_API_KEY": "sk-secret"})
    assert "sk-secret" not in str(info.value)


def test_secret_files(tmp_path: Path) -> None:
    """Broker password and API key may be read from files."""
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "key").write_text("Bearer k\n")
    text = (
        f"region: r\nprobe_id: p\nmqtt: {{password_file: {tmp_path / 'pw'}}}\n"
        f"targets: [{{name: a, url: 'http://x', version_auth_header_file: {tmp_path / 'key'}}}]\n"
    )
    config = parse_config(text, source="p", env={})
    assert config.mqtt is not None
    assert config.mqtt.resolved_password() == "s3cret"
    assert config.targets[0].auth_header() == "Bearer k"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported with its name."""
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml", {})


def test_cli_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check-config exits 0 for a good file and 2 naming file and key for a bad one."""
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert main(["--config", str(good), "--check-config"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "    timeout: 30s\n")
    assert main(["--config", str(bad), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "timeout (30s) must be shorter than interval" in err
