"""The deploy/ files, checked by the tools that will run them, and the broker's ACL for real."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
import trustme
import yaml

from demo.local import free_port, mosquitto_binary, wait_port
from tests.integration.conftest import ROOT, Process
from tests.polling import wait_until, wait_until_async

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy"
PASSWORDS = {
    "probe-us-east": "pw-us",
    "probe-eu-west": "pw-eu",
    "probe-ap-southeast": "pw-ap",
    "aggregator": "pw-agg",
    "aggregator-b": "pw-agg-b",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs it from Debian")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_config_and_rules() -> None:
    """Promtool accepts the Prometheus config and rules, and the rule unit tests pass."""
    promtool = tool("promtool")
    config = run(
        promtool, "check", "config", "--syntax-only", str(DEPLOY / "prometheus/prometheus.yml")
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run(promtool, "check", "rules", str(DEPLOY / "prometheus/rules/vigil.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 19 rules found" in rules.stdout
    tests = run(promtool, "test", "rules", str(DEPLOY / "prometheus/tests/vigil_test.yml"))
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


def test_amtool_checks_alertmanager_config() -> None:
    """Amtool accepts the Alertmanager config: two receivers and the inhibit rule."""
    out = run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager/alertmanager.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 receivers" in out.stdout
    assert "1 inhibit rules" in out.stdout


def test_compose_file_parses_and_its_files_exist() -> None:
    """Every file the compose stack mounts or builds from is in the repository."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {
        "mosquitto",
        "probe-us-east",
        "probe-eu-west",
        "probe-ap-southeast",
        "aggregator",
        "prometheus",
        "alertmanager",
        "demo-target",
    } <= services.keys()
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            assert (DEPLOY / build / "Dockerfile").exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


@pytest.fixture
def deploy_broker(tmp_path: Path) -> Iterator[int]:
    """Mosquitto with deploy/'s config, password file made as start.sh does, on loopback."""
    passwd_tool = tool("mosquitto_passwd")
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        done = run(passwd_tool, "-b", str(passwd), user, password)
        assert done.returncode == 0, done.stderr
    port = free_port()
    text = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    text = text.replace("/mosquitto/run/passwd", str(passwd))
    text = text.replace("/mosquitto/config/acl", str(DEPLOY / "mosquitto/acl"))
    text = text.replace("/mosquitto/data/", f"{tmp_path}/")
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    assert f"listener {port} 127.0.0.1" in text
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + f"user {getpass.getuser()}\nlog_dest file {tmp_path}/broker.log\n")
    binary = mosquitto_binary()
    assert binary is not None, "mosquitto is installed by `make test`"
    proc = subprocess.Popen([binary, "-c", str(conf)])
    wait_port(port)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def client(port: int, user: str | None, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=password or PASSWORDS.get(user or ""),
        protocol=aiomqtt.ProtocolVersion.V5,
    )


async def test_broker_acl(deploy_broker: int) -> None:
    """Probes write only their region, each aggregator only its state; no credentials, no entry."""
    port = deploy_broker
    seen: list[str] = []

    async def observe(watcher: aiomqtt.Client) -> None:
        async for message in watcher.messages:
            seen.append(str(message.topic))

    # One connection per login (use_username_as_clientid): the aggregator watches and
    # publishes on the same one.
    async with client(port, "aggregator") as aggregator:
        await aggregator.subscribe("vigil/v1/results/#", qos=1)
        await aggregator.subscribe("vigil/v1/probes/#", qos=1)
        await aggregator.subscribe("vigil/v1/state/aggregator/+", qos=1)
        watching = asyncio.create_task(observe(aggregator))
        try:
            async with client(port, "probe-us-east") as probe:
                await probe.publish("vigil/v1/results/eu-west/api", b"forged", qos=1)
                await probe.publish("vigil/v1/probes/us-east/someone-else", b"forged", qos=1)
                await probe.publish("vigil/v1/state/aggregator/api", b"forged", qos=1)
                await probe.publish("vigil/v1/results/us-east/api", b"allowed", qos=1)
                await probe.publish("vigil/v1/probes/us-east/us-east-1", b"allowed", qos=1)
            await wait_until(lambda: len(seen) >= 2, what="the probe's allowed publishes")
            # The other aggregator of the pair may not write this one's state either.
            async with client(port, "aggregator-b") as other:
                await other.publish("vigil/v1/state/aggregator/api", b"forged", qos=1)
                await other.publish("vigil/v1/state/aggregator-b/api", b"its own", qos=1)
            await aggregator.publish("vigil/v1/results/us-east/api", b"forged", qos=1)
            await aggregator.publish("vigil/v1/state/aggregator/api", b"allowed", qos=1)
            await wait_until(
                lambda: "vigil/v1/state/aggregator/api" in seen, what="the allowed publishes"
            )
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    # Same publishers, same order: anything refused would have arrived before what followed it.
    assert seen == [
        "vigil/v1/results/us-east/api",
        "vigil/v1/probes/us-east/us-east-1",
        "vigil/v1/state/aggregator/api",
    ]
    for user, password in ((None, None), ("probe-us-east", "wrong")):
        with pytest.raises(aiomqtt.MqttError):
            async with client(port, user, password):
                pass


def _make_secrets(directory: Path) -> dict[str, str]:
    """deploy/make-secrets.sh's files in `directory`, and the passwords it chose."""
    made = run("sh", str(DEPLOY / "make-secrets.sh"), str(directory))
    assert made.returncode == 0, made.stderr
    assert directory.stat().st_mode & 0o777 == 0o700
    passwords = {}
    for user in PASSWORDS:
        secret = directory / f"mqtt-password-{user}"
        # Readable by the container's non-root user: compose bind-mounts it as it is.
        assert secret.stat().st_mode & 0o777 == 0o644
        passwords[user] = secret.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", passwords[user])
    assert len(set(passwords.values())) == len(passwords)
    again = run("sh", str(DEPLOY / "make-secrets.sh"), str(directory))
    assert again.returncode == 0, again.stderr
    kept = {u: (directory / f"mqtt-password-{u}").read_text().strip() for u in PASSWORDS}
    assert kept == passwords, "running it again never changes a password"
    return passwords


@pytest.mark.parametrize("source", ["secret files", "environment"])
def test_deploy_broker_starts_with_its_own_start_script(source: str, tmp_path: Path) -> None:
    """start.sh as the container runs it (as root, mosquitto dropping to its own user) works.

    The passwords come from the file secrets compose mounts (made by make-secrets.sh), or,
    without them, from MQTT_PASSWORD_<USER>. Before, the password file was root's with mode
    0700 and mosquitto 2, which reads it after dropping privileges, exited with "Unable to
    open pwfile" in a restart loop.
    """
    if os.geteuid() != 0:
        pytest.fail("run as root, as `make test` and the broker's container do")
    mosquitto = pwd.getpwnam("mosquitto")  # Debian's mosquitto package creates the user
    # Outside pytest's root-only tmp tree: mosquitto's own user must reach these paths.
    root = Path(tempfile.mkdtemp(prefix="vigil-broker-", dir="/tmp"))
    try:
        root.chmod(0o755)
        run_dir, config_dir, data_dir = root / "run", root / "config", root / "data"
        for path, mode in ((run_dir, 0o1777), (config_dir, 0o755), (data_dir, 0o700)):
            path.mkdir()
            path.chmod(mode)  # run: as a tmpfs mounts
        os.chown(data_dir, mosquitto.pw_uid, mosquitto.pw_gid)
        shutil.copy(DEPLOY / "mosquitto/acl", config_dir / "acl")
        (config_dir / "acl").chmod(0o644)
        port = free_port()
        text = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
        text = text.replace("/mosquitto/run/passwd", str(run_dir / "passwd"))
        text = text.replace("/mosquitto/config/acl", str(config_dir / "acl"))
        text = text.replace("/mosquitto/data/", f"{data_dir}/")
        text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
        conf = config_dir / "mosquitto.conf"
        conf.write_text(text + "log_dest stderr\n")
        conf.chmod(0o644)
        env = {
            **os.environ,
            "MOSQUITTO_RUN": str(run_dir),
            "MOSQUITTO_CONFIG": str(conf),
            "MOSQUITTO_SECRETS": str(root / "secrets"),
            **{
                f"MQTT_PASSWORD_{user.upper().replace('-', '_')}": password
                for user, password in PASSWORDS.items()
            },
        }
        passwords = PASSWORDS
        if source == "secret files":
            passwords = _make_secrets(root / "secrets")
        env["PATH"] = f"{env.get('PATH', '')}:/usr/sbin:/sbin"
        log = (tmp_path / "broker.log").open("wb")
        proc = subprocess.Popen(
            ["sh", str(DEPLOY / "mosquitto/start.sh")], env=env, stdout=log, stderr=log
        )
        try:
            try:
                wait_port(port)
            except TimeoutError:
                pytest.fail((tmp_path / "broker.log").read_text(errors="replace")[-2000:])
            info = (run_dir / "passwd").stat()
            assert (info.st_uid, info.st_mode & 0o777) == (mosquitto.pw_uid, 0o600)

            async def publish() -> None:
                password = passwords["probe-us-east"]
                async with client(port, "probe-us-east", password) as probe:
                    await probe.publish("vigil/v1/results/us-east/api", b"hello", qos=1)

            asyncio.run(publish())
            with pytest.raises(aiomqtt.MqttError):
                asyncio.run(_connect(port, "probe-us-east", "wrong"))
            if source == "secret files":  # where both are there, the file wins
                with pytest.raises(aiomqtt.MqttError):
                    asyncio.run(_connect(port, "probe-us-east", PASSWORDS["probe-us-east"]))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _connect(port: int, user: str, password: str) -> None:
    async with client(port, user, password):
        pass


async def collect(client: aiomqtt.Client, count: int, limit: float = 10.0) -> list[bytes]:
    """Up to `count` messages, or what came within `limit` seconds."""
    got: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            async for message in client.messages:
                got.append(bytes(message.payload))
                if len(got) == count:
                    break
    return got


def v311(port: int, user: str, identifier: str, *, clean: bool) -> aiomqtt.Client:
    """An MQTT 3.1.1 client of `user` asking for the client id `identifier`."""
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=PASSWORDS[user],
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=clean,
    )


def aggregator_session(port: int) -> aiomqtt.Client:
    """The aggregator as it connects: its client id, a persistent session."""
    return v311(port, "aggregator", "vigil-aggregator", clean=False)


async def test_a_probe_login_cannot_take_the_aggregators_session(deploy_broker: int) -> None:
    """A probe's credentials with the aggregator's client id: the queued results survive.

    Without `use_username_as_clientid`, the impostor's clean session replaced the
    aggregator's and the 5 results queued for it were gone (0 of 5 arrived).
    """
    port = deploy_broker
    async with aggregator_session(port) as aggregator:
        await aggregator.subscribe("vigil/v1/results/#", qos=1)
    async with client(port, "probe-us-east") as probe:
        for i in range(5):
            await probe.publish("vigil/v1/results/us-east/api", f"queued-{i}".encode(), qos=1)
    impostor = v311(port, "probe-us-east", "vigil-aggregator", clean=True)
    async with impostor:
        pass
    async with aggregator_session(port) as aggregator:
        assert await collect(aggregator, 5) == [f"queued-{i}".encode() for i in range(5)]
        # Online, the real aggregator is not thrown off by another impostor either.
        async with impostor:
            async with client(port, "probe-us-east") as probe:
                await probe.publish("vigil/v1/results/us-east/api", b"live", qos=1)
            assert await collect(aggregator, 1) == [b"live"]


async def test_an_oversized_publish_is_refused_by_the_broker(deploy_broker: int) -> None:
    """2 MiB from a probe login: the broker drops the probe, no subscriber ever gets it."""
    port = deploy_broker
    async with aggregator_session(port) as aggregator:
        await aggregator.subscribe("vigil/v1/results/#", qos=1)
        with contextlib.suppress(aiomqtt.MqttError):
            async with client(port, "probe-us-east") as probe:
                await probe.publish("vigil/v1/results/us-east/api", b"x" * (2 << 20), qos=1)
        async with client(port, "probe-us-east") as probe:
            await probe.publish("vigil/v1/results/us-east/api", b"after", qos=1)
        assert await collect(aggregator, 1) == [b"after"]


@pytest.fixture
def tls_deploy_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The deploy broker with its TLS listener example switched on (a trustme CA)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "broker.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "broker.key"))
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in PASSWORDS.items():
        assert run(tool("mosquitto_passwd"), "-b", str(passwd), user, password).returncode == 0
    port = free_port()
    text = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    text = text.replace("/mosquitto/run/passwd", str(passwd))
    text = text.replace("/mosquitto/config/acl", str(DEPLOY / "mosquitto/acl"))
    text = text.replace("/mosquitto/data/", f"{tmp_path}/")
    text = re.sub(r"^listener 1883$", f"listener {free_port()} 127.0.0.1", text, flags=re.M)
    # Switch the documented TLS example on, as an operator would.
    text = re.sub(r"^#listener 8883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    text = re.sub(
        r"^#(cafile|certfile|keyfile|tls_version|use_username_as_clientid) ",
        r"\1 ",
        text,
        flags=re.M,
    )
    text = text.replace("/mosquitto/certs/", f"{tmp_path}/")
    assert f"listener {port} 127.0.0.1\nuse_username_as_clientid true\ncafile" in text
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + f"user {getpass.getuser()}\nlog_dest file {tmp_path}/broker.log\n")
    binary = mosquitto_binary()
    assert binary is not None
    proc = subprocess.Popen([binary, "-c", str(conf)])
    wait_port(port)
    yield port, tmp_path / "ca.crt"
    proc.terminate()
    proc.wait(timeout=10)


async def test_probe_and_aggregator_over_tls_with_credentials(
    tls_deploy_broker: tuple[int, Path], demo_target: str, tmp_path: Path
) -> None:
    """Probe and aggregator processes reach the deploy broker over TLS with their credentials."""
    port, ca = tls_deploy_broker
    mqtt = {"url": f"mqtts://127.0.0.1:{port}", "ca_file": str(ca), "reconnect_max": "1s"}
    probe_cfg = tmp_path / "probe.yaml"
    probe_cfg.write_text(
        yaml.safe_dump(
            {
                "region": "us-east",
                "probe_id": "us-east-1",
                "mqtt": mqtt,
                "listen": "127.0.0.1:0",
                "targets": [
                    {
                        "name": "api",
                        "url": demo_target,
                        "interval": 0.5,
                        "timeout": 0.4,
                        "version_path": None,
                    }
                ],
            }
        )
    )
    agg_port = free_port()
    agg_cfg = tmp_path / "aggregator.yaml"
    agg_cfg.write_text(
        yaml.safe_dump(
            {
                "mqtt": mqtt,
                "listen": f"127.0.0.1:{agg_port}",
                "regions": ["us-east"],
                "rule": {"regions": 1, "min_regions": 1},
                "startup_grace": "2s",
            }
        )
    )
    aggregator = Process(
        ["-m", "aggregator", "--config", str(agg_cfg)],
        tmp_path / "agg.log",
        env={"VIGIL_MQTT_USERNAME": "aggregator", "VIGIL_MQTT_PASSWORD": PASSWORDS["aggregator"]},
    )
    probe = Process(
        ["-m", "probe", "--config", str(probe_cfg)],
        tmp_path / "probe.log",
        env={
            "VIGIL_MQTT_USERNAME": "probe-us-east",
            "VIGIL_MQTT_PASSWORD": PASSWORDS["probe-us-east"],
        },
    )
    try:
        wait_port(agg_port)
        async with aiohttp.ClientSession() as session:

            async def judged_up() -> bool:
                async with session.get(f"http://127.0.0.1:{agg_port}/api/v1/status") as resp:
                    status = await resp.json()
                return bool(status["targets"]) and status["targets"][0]["verdict"] == "up"

            await wait_until_async(judged_up, 30, what="a verdict from results sent over TLS")
    finally:
        assert probe.stop() == 0
        assert aggregator.stop() == 0
    assert probe.events("mqtt_connected")
    assert not probe.events("mqtt_connect_failed")
