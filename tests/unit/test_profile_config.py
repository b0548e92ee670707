"""Target profiles and version auth keys in the probe config, and the README's configs (#12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from aggregator.config import Rule
from probe.config import ProbeConfig, TargetConfig, parse_config
from probe.profiles import PROFILES, HealthEndpoint
from probe.verdict import error_detail
from runtime.config import ConfigError
from tests.omniroute_fakes import Generation, readme_configs, readme_section

HEAD = """
region: us-east
probe_id: us-east-1
targets:
"""


def parse(targets: str, env: dict[str, str] | None = None) -> ProbeConfig:
    return parse_config(HEAD + targets, source="probe.yaml", env=env or {})


def one(extra: str = "", env: dict[str, str] | None = None) -> TargetConfig:
    text = '  - name: api\n    url: "http://127.0.0.1:20128"\n' + extra
    return parse(text, env).targets[0]


def test_unknown_profile_names_the_key() -> None:
    """An unknown profile is a config error naming the file, the key and the known ones."""
    with pytest.raises(ConfigError) as err:
        one("    profile: omnirout\n")
    message = str(err.value)
    assert message.startswith("probe.yaml: targets[0].profile:")
    assert "'omnirout'" in message
    assert "generic, omniroute" in message


def test_generic_is_the_default_and_keeps_one_endpoint() -> None:
    """Without a profile the target has its one health endpoint, as before profiles."""
    target = one()
    assert target.profile == "generic"
    assert target.health_endpoints == (HealthEndpoint("/api/health/ping", "status", "ok"),)


def test_omniroute_lists_both_generations() -> None:
    """`profile: omniroute` checks ping first and knows monitoring/health with its version."""
    target = one("    profile: omniroute\n")
    assert [e.path for e in target.health_endpoints] == [
        "/api/health/ping",
        "/api/monitoring/health",
    ]
    fallback = target.health_endpoints[1]
    assert (fallback.equals, fallback.version_field) == ("healthy", "version")
    assert target.version_url == "http://127.0.0.1:20128/api/system/version"
    assert target.latency_budget == 0.05


@pytest.mark.parametrize(
    ("extra", "endpoints"),
    [
        # The 3.7.x endpoint named: pinned there with its own checks.
        (
            "    health_path: /api/monitoring/health\n",
            (HealthEndpoint("/api/monitoring/health", "status", "healthy", "version"),),
        ),
        # A path of its own: pinned, with the target's body check.
        ("    health_path: /healthz\n", (HealthEndpoint("/healthz", "status", "ok"),)),
        # An explicit body wins over the profile's checks.
        (
            "    body: {json_field: state, equals: up}\n",
            (HealthEndpoint("/api/health/ping", "state", "up"),),
        ),
        ("    body: null\n", (HealthEndpoint("/api/health/ping", None, "ok"),)),
    ],
)
def test_explicit_keys_override_the_profile(
    extra: str, endpoints: tuple[HealthEndpoint, ...]
) -> None:
    """A key set in the target wins over the profile, and pins the health endpoint."""
    target = one("    profile: omniroute\n" + extra)
    assert target.health_endpoints == endpoints


def test_explicit_latency_budget_wins() -> None:
    """The profile's latency budget is only a default."""
    assert one("    profile: omniroute\n    latency_budget: 200ms\n").latency_budget == 0.2


def test_version_headers_expand_env_and_stay_secret(tmp_path: Path) -> None:
    """`version_headers` take ${VAR}, files are read at load, and no value shows in a repr."""
    cookie = tmp_path / "cookie"
    cookie.write_text("auth_token=from-file\n")
    target = one(
        '    version_headers: {X-Api-Key: "${KEY}"}\n'
        f"    version_header_files: {{Cookie: '{cookie}'}}\n",
        env={"KEY": "k-123"},
    )
    assert target.version_header_values() == {
        "X-Api-Key": "k-123",
        "Cookie": "auth_token=from-file",
    }
    assert target.has_version_credentials
    assert "k-123" not in repr(target)
    assert "from-file" not in repr(target)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('    version_headers: {"Bad Name": x}\n', "targets[0].version_headers"),
        ('    version_headers: {X-A: "a\\nb"}\n', "line break"),
        (
            '    version_headers: {Authorization: x}\n    version_auth_header: "Bearer y"\n',
            "not both",
        ),
        (
            "    version_headers: {Cookie: x}\n"
            "    version_login: {url: /api/auth/login, password_file: /etc/hostname}\n",
            "not both",
        ),
        (
            "    version_login: {url: /api/auth/login, password_file: /nonexistent/pw}\n",
            "targets[0].version_login.password_file",
        ),
        ("    version_login: {url: login, password_file: /etc/hostname}\n", "version_login.url"),
    ],
)
def test_bad_version_auth_is_a_config_error(extra: str, fragment: str) -> None:
    """Bad header names, line breaks, conflicts and unreadable password files name the key."""
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        one(extra)


def test_version_login_reads_the_password_at_load(tmp_path: Path) -> None:
    """The password file is read when the config loads; the repr shows neither it nor its path."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    target = one(f"    version_login: {{url: /api/auth/login, password_file: '{secret}'}}\n")
    assert target.version_login is not None
    assert target.version_login.password_file.value.get_secret_value() == "hunter2"
    assert target.version_login.cookie == "auth_token"
    assert target.login_url == "http://127.0.0.1:20128/api/auth/login"
    assert "hunter2" not in repr(target)


def test_every_profile_is_valid_data() -> None:
    """Each profile's endpoints are absolute paths and its defaults make a valid target."""
    for name, profile in PROFILES.items():
        assert all(e.path.startswith("/") for e in profile.endpoints), name
        TargetConfig.model_validate({"name": "x", "url": "http://h", "profile": name})


THREE_PROBES = [
    {"VIGIL_REGION": region, "VIGIL_PROBE_ID": f"{region}-1", "PROBE_PORT": str(port)}
    for region, port in (("us-east", 9101), ("eu-west", 9102), ("ap-southeast", 9103))
]


@pytest.mark.parametrize("generation", ["source", "3.7"])
def test_readme_omniroute_configs_run_three_probes_on_one_host(
    generation: Generation, tmp_path: Path
) -> None:
    """Each README OmniRoute config, unchanged, gives three probes their own port and broker.

    Without `listen: ${PROBE_PORT}` all three take 9101 and two of them cannot start.
    """
    password = tmp_path / "omniroute-password"
    password.write_text("pw")
    text = readme_configs()[generation]
    env = {
        "OMNIROUTE_API_KEY": "sk-1",
        "OMNIROUTE_PASSWORD_FILE": str(password),
        "VIGIL_MQTT_URL": "mqtt://127.0.0.1:1884",
    }
    configs = [
        parse_config(text, source="README.md", env={**env, **probe}) for probe in THREE_PROBES
    ]
    assert [c.listen for c in configs] == [f"127.0.0.1:{p['PROBE_PORT']}" for p in THREE_PROBES]
    assert len({(c.region, c.probe_id) for c in configs}) == 3
    # The broker comes from the environment, as the section says.
    assert all(c.mqtt is not None and c.mqtt.url == "mqtt://127.0.0.1:1884" for c in configs)
    assert all(t.profile == "omniroute" for c in configs for t in c.targets)


def test_readme_omniroute_detection_time_matches_the_configs(tmp_path: Path) -> None:
    """The section's 14 s is interval + (N - 1) x retry_interval at both configs' values."""
    password = tmp_path / "omniroute-password"
    password.write_text("pw")
    env = {
        "OMNIROUTE_API_KEY": "sk-1",
        "OMNIROUTE_PASSWORD_FILE": str(password),
        **THREE_PROBES[0],
    }
    failures = Rule().failures
    for text in readme_configs().values():
        [target] = parse_config(text, source="README.md", env=env).targets
        assert target.retry_interval is not None
        assert target.confirm_retries >= failures - 1  # the retries reach N in time
        worst = target.interval + (failures - 1) * target.retry_interval
        assert (target.interval, target.retry_interval, failures, worst) == (10, 2, 3, 14)
    section = readme_section("Watching OmniRoute")
    assert "= 10 + 2 x 2 = 14 s at most" in " ".join(section.split())


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            b'{"error":{"code":"AUTH_001","message":"Authentication required",'
            b'"correlation_id":"c1"}}',
            "Authentication required (AUTH_001)",
        ),
        (b'{"status":"error","error":"Health check failed"}', "Health check failed"),
        (b'{"message":"upstream down"}', "upstream down"),
        (b'{"detail":"Not authenticated"}', "Not authenticated"),
        (b'{"error":{"detail":"quota"}}', "quota"),
        (b'{"error":{"message":"x","code":true}}', "x"),
        (b'{"error":""}', None),
        (b'{"error":{"error":{"error":{"message":"deep"}}}}', None),
        (b"Invalid management token", "Invalid management token"),
        (b"<!DOCTYPE html><h1>404</h1>", None),
        (b"\xff\xfe", None),
        (b"", None),
        (b'{"error":"' + b"e" * 1000 + b'"}', "e" * 199 + "…"),
    ],
)
def test_error_detail(body: bytes, detail: str | None) -> None:
    """Error text is read from `error` (string or object), `message` or `detail`, bounded."""
    assert error_detail(body) == detail


def test_headers_stay_out_of_reprs_and_a_login_never_goes_out_in_clear() -> None:
    """A cookie in `headers` is not in the repr; a plain-http login on another host is refused."""
    target = TargetConfig.model_validate(
        {"name": "a", "url": "https://svc.example", "headers": {"Cookie": "auth_token=SECRETJWT"}}
    )
    assert "SECRETJWT" not in repr(target)
    login = {"password_file": __file__}
    for url, ok in [
        ("/api/auth/login", True),
        ("https://sso.example/login", True),
        ("http://svc.example/api/auth/login", False),
        ("http://elsewhere.example/login", False),
    ]:
        fields = {"name": "a", "url": "https://svc.example", "version_login": {**login, "url": url}}
        if ok:
            TargetConfig.model_validate(fields)
        else:
            with pytest.raises(ValidationError, match="use https"):
                TargetConfig.model_validate(fields)
