"""Every file a config names is read and checked by --check-config and at start (exit 2).

Before, secret files, CA bundles and client certificates were read at run time: a missing
`password_file` passed `--check-config` and killed the probe later with exit 1, and a bad
target `ca_file` made every check crash so no result was ever published.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from aggregator.cli import main as aggregator_main
from aggregator.config import parse_config as parse_aggregator
from probe.cli import main as probe_main
from probe.config import parse_config as parse_probe


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good files: a CA bundle, a client certificate and its key, a secret, a token list."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("client.example")
    files = {
        "ca": root / "ca.pem",
        "cert": root / "client.pem",
        "key": root / "client.key",
        "secret": root / "secret",
        "junk": root / "junk.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    files["secret"].write_text("s3cret\n")
    files["junk"].write_text("not a certificate\n")
    return files


def probe_yaml(mqtt: str = "", target: str = "", url: str = "https://api.example") -> str:
    return (
        f"region: r\nprobe_id: p\nmqtt: {{url: 'mqtts://127.0.0.1:8883'{mqtt}}}\n"
        f"targets: [{{name: api, url: '{url}'{target}}}]\n"
    )


def aggregator_yaml(mqtt: str = "", alertmanager: str = "", api: str = "") -> str:
    return (
        "regions: [a, b, c]\n"
        f"mqtt: {{url: 'mqtts://127.0.0.1:8883'{mqtt}}}\n"
        f"alertmanager: {{urls: ['https://am:9093']{alertmanager}}}\n"
        f"api: {{protect_probes: false{api}}}\n"
    )


def _key(name: str, value: str) -> str:
    return f", {name}: '{value}'"


# (service, key as the error names it, YAML with the file at {path})
CASES: list[tuple[str, str, Callable[[str], str]]] = [
    ("probe", "mqtt.password_file", lambda p: probe_yaml(mqtt=_key("password_file", p))),
    ("probe", "ca_file", lambda p: probe_yaml(mqtt=_key("ca_file", p))),
    ("probe", "cert_file", lambda p: probe_yaml(mqtt=_key("cert_file", p))),
    (
        "probe",
        "targets[0].version_auth_header_file",
        lambda p: probe_yaml(target=_key("version_auth_header_file", p)),
    ),
    ("probe", "ca_file", lambda p: probe_yaml(target=_key("ca_file", p))),
    (
        "probe",
        "targets[0].version_login.password_file",
        lambda p: probe_yaml(target=f", version_login: {{url: /login, password_file: '{p}'}}"),
    ),
    ("aggregator", "mqtt.password_file", lambda p: aggregator_yaml(mqtt=_key("password_file", p))),
    ("aggregator", "ca_file", lambda p: aggregator_yaml(mqtt=_key("ca_file", p))),
    (
        "aggregator",
        "alertmanager.bearer_token_file",
        lambda p: aggregator_yaml(alertmanager=_key("bearer_token_file", p)),
    ),
    (
        "aggregator",
        "alertmanager.basic_auth.password_file",
        lambda p: aggregator_yaml(
            alertmanager=f", basic_auth: {{username: u, password_file: '{p}'}}"
        ),
    ),
    ("aggregator", "ca_file", lambda p: aggregator_yaml(alertmanager=_key("ca_file", p))),
    ("aggregator", "cert_file", lambda p: aggregator_yaml(alertmanager=_key("cert_file", p))),
    ("aggregator", "api.tokens_file", lambda p: aggregator_yaml(api=_key("tokens_file", p))),
]

MAINS = {"probe": probe_main, "aggregator": aggregator_main}


@pytest.mark.parametrize(
    ("service", "key", "yaml_for"), CASES, ids=[f"{s}-{k}" for s, k, _ in CASES]
)
def test_check_config_reads_every_named_file(
    service: str,
    key: str,
    yaml_for: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing file is exit 2 from --check-config, naming the config file, key and path."""
    missing = tmp_path / "absent" / "file.pem"
    config = tmp_path / f"{service}.yaml"
    config.write_text(yaml_for(str(missing)))
    assert MAINS[service](["--config", str(config), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert key in err
    assert str(missing) in err
    assert "No such file" in err


@pytest.mark.parametrize(
    "yaml_for",
    [
        lambda p: probe_yaml(mqtt=_key("ca_file", p)),
        lambda p: probe_yaml(target=_key("ca_file", p)),
        lambda p: aggregator_yaml(alertmanager=_key("ca_file", p)),
    ],
)
def test_a_file_that_is_not_a_certificate_is_a_config_error(
    yaml_for: Callable[[str], str],
    pki: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A CA file that exists but holds no certificate fails at --check-config, not per check."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml_for(str(pki["junk"])))
    main = probe_main if "probe_id" in config.read_text() else aggregator_main
    assert main(["--config", str(config), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "ca_file: cannot load" in err
    assert str(pki["junk"]) in err


def test_good_files_load_once_and_are_used(pki: dict[str, Path]) -> None:
    """Valid files give a ready TLS context and the secrets, with nothing left to read later."""
    ca, cert, key, secret = (str(pki[k]) for k in ("ca", "cert", "key", "secret"))
    tls = f", ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'"
    probe = parse_probe(
        probe_yaml(
            mqtt=tls + _key("password_file", secret),
            target=_key("ca_file", ca) + _key("version_auth_header_file", secret),
        ),
        source="p.yaml",
        env={},
    )
    assert probe.mqtt is not None
    assert probe.mqtt.ssl_context() is not None
    assert isinstance(probe.targets[0].ssl, ssl.SSLContext)
    agg = parse_aggregator(
        aggregator_yaml(
            mqtt=tls,
            alertmanager=tls + _key("bearer_token_file", secret),
            api=_key("tokens_file", secret),
        ),
        source="a.yaml",
        env={},
    )
    # The files are gone now; a running service must not need them again.
    for path in pki.values():
        path.rename(path.with_name(path.name + ".moved"))
    try:
        assert probe.mqtt.resolved_password() == "s3cret"
        assert probe.targets[0].auth_header() == "s3cret"
        assert agg.api.all_tokens() == frozenset({"s3cret"})
        assert isinstance(agg.alertmanager.ssl, ssl.SSLContext)
        assert agg.mqtt.ssl_context() is not None
        assert "s3cret" not in repr(agg) + repr(probe)
    finally:
        for path in pki.values():
            path.with_name(path.name + ".moved").rename(path)


@pytest.mark.parametrize(
    ("service", "block"),
    [("probe", "mqtt"), ("aggregator", "mqtt"), ("aggregator", "alertmanager")],
)
def test_a_missing_key_file_is_named(
    service: str,
    block: str,
    pki: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing key_file beside a good certificate is exit 2 naming key_file and its path."""
    missing = tmp_path / "absent" / "client.key"
    files = _key("cert_file", str(pki["cert"])) + _key("key_file", str(missing))
    text = probe_yaml(mqtt=files) if service == "probe" else aggregator_yaml(**{block: files})
    config = tmp_path / f"{service}.yaml"
    config.write_text(text)
    assert MAINS[service](["--config", str(config), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert f"key_file: cannot read {missing}: No such file" in err


@pytest.mark.parametrize("service", ["probe", "aggregator"])
@pytest.mark.parametrize(
    ("key", "file"), [("ca_file", "ca"), ("cert_file", "cert"), ("key_file", "key")]
)
def test_a_tls_file_with_a_plain_mqtt_url_is_refused(
    service: str,
    key: str,
    file: str,
    pki: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An MQTT TLS file beside a plain mqtt:// url is exit 2 naming the key, never ignored."""
    named = _key(key, str(pki[file]))
    text = probe_yaml(mqtt=named) if service == "probe" else aggregator_yaml(mqtt=named)
    config = tmp_path / f"{service}.yaml"
    config.write_text(text.replace("mqtts://127.0.0.1:8883", "mqtt://127.0.0.1:1883"))
    assert MAINS[service](["--config", str(config), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert f"{key} is set but url is plain mqtt://" in err


def test_key_without_certificate_is_a_config_error(pki: dict[str, Path]) -> None:
    """key_file alone means a forgotten cert_file: said at load, not at the TLS handshake."""
    from runtime.config import ConfigError

    with pytest.raises(ConfigError, match="key_file: set cert_file too"):
        parse_probe(probe_yaml(mqtt=_key("key_file", str(pki["key"]))), source="p", env={})


@pytest.mark.parametrize("service", ["probe", "aggregator"])
def test_a_missing_file_at_start_is_exit_2(service: str, tmp_path: Path) -> None:
    """Started for real (not --check-config), a missing password file is exit 2 at once."""
    missing = tmp_path / "nope"
    config = tmp_path / "c.yaml"
    mqtt = f", password_file: '{missing}'"
    text = probe_yaml(mqtt=mqtt) if service == "probe" else aggregator_yaml(mqtt=mqtt)
    config.write_text(text.replace("mqtts://127.0.0.1:8883", "mqtt://127.0.0.1:1"))
    proc = subprocess.run(
        [sys.executable, "-m", service, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "mqtt.password_file" in proc.stderr
    assert str(missing) in proc.stderr


def test_rotated_broker_credentials_are_used_at_the_next_connect(tmp_path: Path) -> None:
    """A replaced password file is read again at connect; while it is missing, the last one."""
    secret = tmp_path / "mqtt-password"
    secret.write_text("first\n")
    config = parse_probe(probe_yaml(mqtt=_key("password_file", str(secret))), source="p", env={})
    assert config.mqtt is not None
    assert config.mqtt.resolved_password() == "first"
    secret.write_text("rotated\n")
    assert config.mqtt.resolved_password() == "rotated"
    secret.unlink()  # mid-rotation: no crash, the last password read
    assert config.mqtt.resolved_password() == "rotated"
    context = config.mqtt.ssl_context()
    assert isinstance(context, ssl.SSLContext)
