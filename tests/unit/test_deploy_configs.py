"""The example configs under deploy/ are valid, as the services will read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.config import load_config as load_aggregator
from probe.config import load_config as load_probe
from wire.topics import state_filter, state_topic

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "config"


def test_probe_example_is_valid_and_takes_its_region_from_the_environment() -> None:
    """Each probe container sets its region, id and credentials; the file supplies the rest."""
    env = {
        "VIGIL_REGION": "eu-west",
        "VIGIL_PROBE_ID": "eu-west-1",
        "VIGIL_MQTT_USERNAME": "probe-eu-west",
        "VIGIL_MQTT_PASSWORD": "pw",
        "OMNIROUTE_API_KEY": "k",
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
def test_compose_runs_an_ha_pair_each_with_its_own_identity(name: str) -> None:
    """Both aggregators share image and config; each has its own login, client id and port."""
    services = _compose()["services"]
    service = services[name]
    env = service["environment"]
    assert env["VIGIL_CLIENT_ID"] == env["VIGIL_MQTT_USERNAME"] == name
    password = "MQTT_PASSWORD_" + name.upper().replace("-", "_")
    assert env["VIGIL_MQTT_PASSWORD"] == "${" + password + "}"
    assert password in services["mosquitto"]["environment"]
    assert f"{password}=" in (ROOT / ".env.example").read_text()
    assert service["volumes"] == ["./config/aggregator.yaml:/config/vigil.yaml:ro"]
    assert service["entrypoint"] == ["vigil-aggregator"]
    [port] = service["ports"]
    assert port.startswith("127.0.0.1:"), "the operator API is not published beyond the host"
    config = load_aggregator(DEPLOY / "aggregator.yaml", env)
    assert config.client_id == name
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
