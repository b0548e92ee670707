"""The example configs under deploy/ are valid, as the services will read them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.app import SHUTDOWN_TIMEOUT as AGGREGATOR_SHUTDOWN_TIMEOUT
from aggregator.config import load_config as load_aggregator
from probe.config import load_config as load_probe
from runtime.config import parse_duration
from wire.topics import state_filter, state_topic

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "config"


def test_probe_example_is_valid_and_takes_its_region_from_the_environment(
    tmp_path: Path,
) -> None:
    """Each probe container sets its region, id and credentials; the file supplies the rest."""
    auth = tmp_path / "authorization"
    auth.write_text("Bearer k\n")
    env = {
        "VIGIL_REGION": "eu-west",
        "VIGIL_PROBE_ID": "eu-west-1",
        "VIGIL_MQTT_USERNAME": "probe-eu-west",
        "VIGIL_MQTT_PASSWORD": "pw",
        "OMNIROUTE_AUTHORIZATION_FILE": str(auth),
    }
    config = load_probe(DEPLOY / "probe.yaml", env)
    assert (config.region, config.probe_id) == ("eu-west", "eu-west-1")
    assert config.mqtt is not None
    assert config.mqtt.username == "probe-eu-west"
    assert config.targets[0].auth_header() == "Bearer k"


def test_aggregator_example_is_valid() -> None:
    """The aggregator example lists three regions and an Alertmanager."""
    config = load_aggregator(DEPLOY / "aggregator.yaml", {"VIGIL_MQTT_USERNAME": "aggregator"})
    assert config.client_id == "aggregator"  # the first of the pair without VIGIL_CLIENT_ID
    assert config.regions == ["us-east", "eu-west", "ap-southeast"]
    assert config.alertmanager.urls == ["http://alertmanager:9093"]
    assert config.rule.failures == 3


def test_the_deploy_aggregator_speaks_311_only_to_a_broker_that_bounds_what_5_would() -> None:
    """MQTT 3.1.1 drains faster; the deploy broker gives it the size cap and session expiry."""
    config = load_aggregator(DEPLOY / "aggregator.yaml", {"VIGIL_MQTT_USERNAME": "aggregator"})
    assert config.mqtt.protocol == "3.1.1"
    broker = (DEPLOY.parent / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "max_packet_size 1048576" in broker
    assert any(line.startswith("persistent_client_expiration ") for line in broker)


ROOT = DEPLOY.parent
AGGREGATORS = ("aggregator", "aggregator-b")


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


@pytest.mark.parametrize("name", AGGREGATORS)
def test_compose_runs_an_ha_pair_each_with_its_own_identity(name: str, tmp_path: Path) -> None:
    """Both aggregators share image and config; each has its own login, client id and port."""
    services = _compose()["services"]
    service = services[name]
    env = service["environment"]
    assert env["VIGIL_CLIENT_ID"] == env["VIGIL_MQTT_USERNAME"] == name
    assert env["VIGIL_MQTT_PASSWORD_FILE"] == f"/run/secrets/mqtt-password-{name}"
    assert f"mqtt-password-{name}" in services["mosquitto"]["secrets"]
    # The config, and a volume of its own for the history file (never shared by the pair).
    assert service["volumes"] == [
        "./config/aggregator.yaml:/config/vigil.yaml:ro",
        f"{name}-data:/var/lib/vigil",
    ]
    assert service["entrypoint"] == ["vigil-aggregator"]
    [port] = service["ports"]
    assert port.startswith("127.0.0.1:"), "the operator API is not published beyond the host"
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    config = load_aggregator(
        DEPLOY / "aggregator.yaml", {**env, "VIGIL_MQTT_PASSWORD_FILE": str(secret)}
    )
    assert config.client_id == name
    assert config.mqtt.resolved_password() == "pw"
    assert state_topic(config.client_id, "api") == f"vigil/v1/state/{name}/api"


def test_the_pair_publishes_distinct_ports_and_prometheus_scrapes_both() -> None:
    """Prometheus scrapes each aggregator; their host ports differ."""
    services = _compose()["services"]
    assert len({services[n]["ports"][0] for n in AGGREGATORS}) == 2
    prometheus = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "vigil-aggregator"]
    [static] = job["static_configs"]
    assert sorted(static["targets"]) == sorted(f"{n}:8080" for n in AGGREGATORS)


def _acl() -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    user = ""
    for line in (ROOT / "mosquitto/acl").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            rules[user] = []
        else:
            assert words[0] == "topic", f"unexpected ACL line {line!r}"
            rules[user].append(" ".join(words[1:]))
    return rules


@pytest.mark.parametrize("name", AGGREGATORS)
def test_each_aggregator_login_writes_only_its_own_state_subtree(name: str) -> None:
    """An aggregator reads results and presence and writes only vigil/v1/state/<login>/."""
    assert _acl()[name] == [
        "read vigil/v1/results/#",
        "read vigil/v1/probes/#",
        f"readwrite {state_filter(name)[:-1]}#",
    ]
    users = (ROOT / "mosquitto/start.sh").read_text()
    assert re.search(rf"^for user in .*\b{name}( |;)", users, re.M), "start.sh makes its login"


def test_no_probe_login_may_write_state() -> None:
    """Only the aggregators' logins touch vigil/v1/state/."""
    for user, rules in _acl().items():
        if user not in AGGREGATORS:
            assert not any("vigil/v1/state" in rule for rule in rules), user


# The compose file's secrets: every one a file, each container given only its own.
BROKER_LOGINS = ("probe-us-east", "probe-eu-west", "probe-ap-southeast", *AGGREGATORS)
SECRETS_OF = {
    "mosquitto": [f"mqtt-password-{login}" for login in BROKER_LOGINS],
    "probe-us-east": ["mqtt-password-probe-us-east", "omniroute-authorization"],
    "probe-eu-west": ["mqtt-password-probe-eu-west", "omniroute-authorization"],
    "probe-ap-southeast": ["mqtt-password-probe-ap-southeast", "omniroute-authorization"],
    "aggregator": ["mqtt-password-aggregator"],
    "aggregator-b": ["mqtt-password-aggregator-b"],
    "alertmanager": ["pagerduty-routing-key"],
    "demo-target": ["omniroute-authorization"],
    "prometheus": [],
}


def test_every_compose_secret_is_a_file_under_deploy_secrets() -> None:
    """podman-compose refuses `environment:` secrets; file secrets run under both tools."""
    secrets = _compose()["secrets"]
    assert secrets == {name: {"file": f"./secrets/{name}"} for name in secrets}
    assert set(secrets) == {name for names in SECRETS_OF.values() for name in names}


def test_the_compose_services_are_the_ones_whose_secrets_are_listed() -> None:
    """A new service gets an entry in SECRETS_OF, so what it mounts is decided, not inherited."""
    assert set(_compose()["services"]) == set(SECRETS_OF)


@pytest.mark.parametrize(("name", "secrets"), SECRETS_OF.items())
def test_each_service_mounts_only_its_own_secrets(name: str, secrets: list[str]) -> None:
    """The short syntax, at /run/secrets/<name>; no password in any environment."""
    service = _compose()["services"][name]
    assert service.get("secrets", []) == secrets
    env = service.get("environment", {})
    assert not [key for key in env if "PASSWORD" in key and not key.endswith("_FILE")]
    if "VIGIL_MQTT_USERNAME" in env:
        login = env["VIGIL_MQTT_USERNAME"]
        assert secrets[0] == f"mqtt-password-{login}"
        assert env["VIGIL_MQTT_PASSWORD_FILE"] == f"/run/secrets/mqtt-password-{login}"


def test_no_secret_reaches_a_container_through_the_environment() -> None:
    """Keys and passwords are file secrets; compose substitutes no variable at all."""
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "${" not in compose
    assert not (ROOT / ".env.example").exists()
    for name, service in _compose()["services"].items():
        for key in service.get("environment", {}):
            assert not any(
                word in key for word in ("KEY", "TOKEN", "PASSWORD", "AUTHORIZATION")
            ) or key.endswith("_FILE"), f"{name}: {key}"


def test_the_probes_and_the_demo_target_share_the_authorization_file_secret(
    tmp_path: Path,
) -> None:
    """The probes send what the demo target checks, both from one mounted file."""
    services = _compose()["services"]
    target = services["demo-target"]
    assert "omniroute-authorization" in target["secrets"]
    assert target["command"] == ["--authorization-file", "/run/secrets/omniroute-authorization"]
    auth = tmp_path / "authorization"
    auth.write_text("Bearer sk-test\n")
    password = tmp_path / "password"
    password.write_text("pw\n")
    for name in ("probe-us-east", "probe-eu-west", "probe-ap-southeast"):
        assert "omniroute-authorization" in services[name]["secrets"]
        env = services[name]["environment"]
        assert env["OMNIROUTE_AUTHORIZATION_FILE"] == "/run/secrets/omniroute-authorization"
        config = load_probe(
            DEPLOY / "probe.yaml",
            {
                **env,
                "VIGIL_MQTT_PASSWORD_FILE": str(password),
                "OMNIROUTE_AUTHORIZATION_FILE": str(auth),
            },
        )
        assert config.targets[0].auth_header() == "Bearer sk-test"


def test_the_broker_and_make_secrets_know_every_login_the_compose_file_mounts() -> None:
    """start.sh reads /run/secrets/mqtt-password-<login> for the same logins make-secrets makes."""
    for script in ("mosquitto/start.sh", "make-secrets.sh"):
        text = (ROOT / script).read_text()
        [users] = re.findall(r"^for user in (.*); do$", text, re.M)
        assert tuple(users.split()) == BROKER_LOGINS, script
    start = (ROOT / "mosquitto/start.sh").read_text()
    assert "secrets=${MOSQUITTO_SECRETS:-/run/secrets}" in start
    assert 'file="$secrets/mqtt-password-$user"' in start


def test_alertmanager_reads_the_routing_key_from_its_mounted_secret() -> None:
    """routing_key_file names the file compose mounts; no key inline."""
    config = yaml.safe_load((ROOT / "alertmanager/alertmanager.yml").read_text())
    [receiver] = [r for r in config["receivers"] if r["name"] == "pagerduty"]
    [pagerduty] = receiver["pagerduty_configs"]
    assert pagerduty["routing_key_file"] == "/run/secrets/pagerduty-routing-key"
    assert "routing_key" not in pagerduty


def test_secret_files_are_never_committed_and_never_in_the_build_context() -> None:
    """deploy/secrets/ is ignored but for its README; the image build never sees deploy/."""
    ignored = (ROOT.parent / ".gitignore").read_text().splitlines()
    assert "deploy/secrets/*" in ignored
    assert "!deploy/secrets/README" in ignored
    assert (ROOT / "secrets/README").is_file()
    context = (ROOT.parent / ".dockerignore").read_text().splitlines()
    for excluded in (".git", ".venv", "mutants", "test-output", "tests", "deploy", "**/.env"):
        assert excluded in context, excluded


def _ports(service: dict[str, Any]) -> list[str]:
    ports: list[str] = service.get("ports", [])
    return ports


@pytest.mark.parametrize("name", SECRETS_OF)
def test_every_published_port_binds_to_loopback(name: str) -> None:
    """Nothing the stack publishes is reachable beyond the host."""
    for port in _ports(_compose()["services"][name]):
        assert isinstance(port, str), "short syntax, so the host address is checked here"
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _seconds(service: dict[str, Any]) -> float:
    return parse_duration(service.get("stop_grace_period", "10s"))  # compose's default


def test_stop_grace_periods_outlast_each_services_shutdown(tmp_path: Path) -> None:
    """SIGKILL comes only after a probe's shutdown_timeout and the aggregator's 5 s."""
    services = _compose()["services"]
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    for name in ("probe-us-east", "probe-eu-west", "probe-ap-southeast"):
        env = {
            **services[name]["environment"],
            "VIGIL_MQTT_PASSWORD_FILE": str(secret),
            "OMNIROUTE_AUTHORIZATION_FILE": str(secret),
        }
        probe = load_probe(DEPLOY / "probe.yaml", env)
        assert _seconds(services[name]) > probe.shutdown_timeout, name
    for name in AGGREGATORS:
        assert _seconds(services[name]) > AGGREGATOR_SHUTDOWN_TIMEOUT, name


# The Dockerfile, read as instructions (continuation lines joined, comments dropped).
def _stages() -> list[list[tuple[str, str]]]:
    text = (ROOT.parent / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = [[]]  # the first: ARGs before any FROM
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def _args(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in instructions if kw == keyword]


def test_dockerfile_builds_in_one_stage_and_ships_only_the_venv_from_another() -> None:
    """Multi-stage on a substitutable base; the final stage installs nothing and copies the venv."""
    preamble, build, final = _stages()
    assert _args(preamble, "ARG") == ["BASE_IMAGE=python:3.11-slim"]
    assert _args(build, "FROM") == ["${BASE_IMAGE} AS build"]
    assert _args(final, "FROM") == ["${BASE_IMAGE}"]
    installs = " ".join(_args(build, "RUN"))
    assert "--require-hashes" in installs
    assert "-r requirements/lock.txt" in installs
    assert "--only-binary=:all:" in installs, "no sdist: nothing to compile"
    assert _args(final, "COPY") == ["--from=build /opt/vigil /opt/vigil"]
    for run in _args(final, "RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", run), run


def test_dockerfile_runs_as_a_non_root_user_and_stops_on_sigterm() -> None:
    """USER is numeric and not root, STOPSIGNAL is SIGTERM, the HEALTHCHECK stays."""
    final = _stages()[-1]
    [user] = _args(final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can be checked"
    assert int(uid) != 0
    assert _args(final, "STOPSIGNAL") == ["SIGTERM"]
    [healthcheck] = _args(final, "HEALTHCHECK")
    assert "VIGIL_HEALTH_URL" in healthcheck
    [path] = [e for e in _args(final, "ENV") if "PATH=" in e]
    assert "PATH=/opt/vigil/bin:$PATH" in path, "the venv's python and entry points first"


def test_dockerfile_labels_the_image_the_oci_way() -> None:
    """title, description, source, licenses, and the version from pyproject.toml by default."""
    final = _stages()[-1]
    labels = " ".join(_args(final, "LABEL"))
    found = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', labels))
    assert {"title", "description", "source", "licenses", "version"} <= found.keys()
    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]
    assert found["licenses"] == project["license"]
    assert found["version"] == "${VERSION}"
    assert f"VERSION={project['version']}" in _args(final, "ARG")
