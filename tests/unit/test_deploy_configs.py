"""The example configs under deploy/ are valid, as the services will read them."""

from __future__ import annotations

from pathlib import Path

from aggregator.config import load_config as load_aggregator
from probe.config import load_config as load_probe

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
    assert config.regions == ["us-east", "eu-west", "ap-southeast"]
    assert config.alertmanager.urls == ["http://alertmanager:9093"]
    assert config.rule.failures == 3
