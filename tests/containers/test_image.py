"""The Vigil image as users run it: entry points, user, health, a probe and an aggregator."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.local import port_or_free, wait_port
from tests.containers.engine import Engine
from tests.integration.conftest import REGIONS, Broker, Process

pytestmark = pytest.mark.containers


def poll(predicate: Callable[[], bool], limit: float, what: str) -> None:
    """Wait for `predicate`, failing after `limit` seconds (generous: a loaded 2-core host)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what}")
        time.sleep(0.25)


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback http
            return json.load(resp)
    except OSError:
        return None


def in_image(engine: Engine, image: str, *command: str) -> subprocess.CompletedProcess[str]:
    return engine.run("run", "--rm", "--entrypoint", command[0], image, *command[1:], check=False)


def test_both_entry_points_start(engine: Engine, vigil_image: str) -> None:
    for entry in ("vigil-aggregator", "vigil-probe"):
        done = in_image(engine, vigil_image, entry, "--help")
        assert done.returncode == 0, done.stderr
        assert f"usage: {entry}" in done.stdout
    # The default entry point is the aggregator's.
    done = engine.run("run", "--rm", vigil_image, "--help")
    assert "usage: vigil-aggregator" in done.stdout


def test_runs_as_an_unprivileged_user_that_cannot_change_its_code(
    engine: Engine, vigil_image: str
) -> None:
    assert in_image(engine, vigil_image, "id", "-u").stdout.strip() == "10001"
    touched = in_image(engine, vigil_image, "touch", "/opt/vigil/bin/vigil-probe")
    assert touched.returncode != 0
    assert "Permission denied" in touched.stderr


def test_metadata_healthcheck_stop_signal_and_labels(engine: Engine, vigil_image: str) -> None:
    record = engine.image(vigil_image)
    config = record["Config"]
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/vigil" in config["Volumes"]
    labels = config["Labels"]
    for key in ("title", "description", "licenses", "version", "source", "revision"):
        assert f"org.opencontainers.image.{key}" in labels
    check = engine.healthcheck(vigil_image)
    assert check is not None
    assert "VIGIL_HEALTH_URL" in " ".join(check)


def test_the_final_stage_has_no_compiler_pip_or_caches(engine: Engine, vigil_image: str) -> None:
    # As root, so /root is readable; each finding is printed, and only a clean image
    # prints "clean" (a container that does not start prints nothing and fails too).
    script = (
        'found=; for c in gcc cc c++ pip pip3; do command -v $c >/dev/null && found="$found $c"; '
        "done; for d in /root/.cache /src /opt/vigil/lib/python3.11/site-packages/pip; do "
        '[ -e $d ] && found="$found $d"; done; '
        '/opt/vigil/bin/python -c "import pip" 2>/dev/null && found="$found venv-pip"; '
        'echo "${found:-clean}"'
    )
    done = engine.run(
        "run", "--rm", "--user", "0", "--entrypoint", "sh", vigil_image, "-c", script, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


@pytest.fixture
def host_side(tmp_path: Path) -> Iterator[tuple[Broker, str, set[int]]]:
    """A mosquitto and the demo target on loopback, which host-network containers share.

    The third item holds every port promised so far: the containers' ports avoid them.
    """
    broker = Broker(tmp_path / "broker")
    broker.start()
    target: Process | None = None
    try:
        port = port_or_free(0, {broker.port})
        target = Process(
            ["-m", "demo.target", "--port", str(port), "--api-key", "sk-demo"],
            tmp_path / "target.log",
        )
        wait_port(port, alive=lambda: target is not None and target.proc.poll() is None)
        yield broker, f"http://127.0.0.1:{port}", {broker.port, port}
    finally:
        if target is not None:
            target.stop()
        broker.stop()


class Containers:
    """Containers started by one test, removed (with their volumes) whatever happens."""

    def __init__(self, engine: Engine, image: str, prefix: str) -> None:
        self.engine = engine
        self.image = image
        self.prefix = prefix
        self.names: list[str] = []

    def start(self, name: str, entry: str, config: Path, health_url: str) -> str:
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        self.engine.run(
            "run", "--detach", "--name", full, "--network", "host",
            "--entrypoint", entry,
            "--volume", f"{config}:/config/vigil.yaml:ro",
            "--env", f"VIGIL_HEALTH_URL={health_url}",
            self.image,
        )  # fmt: skip
        return full

    def logs(self, name: str) -> str:
        done = self.engine.run("logs", name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        for name in self.names:
            self.engine.run("rm", "--force", "--volumes", name, check=False, timeout=60)


def test_probe_containers_publish_and_an_aggregator_container_judges(
    engine: Engine, vigil_image: str, host_side: tuple[Broker, str, set[int]], tmp_path: Path
) -> None:
    broker, target, taken = host_side
    agg_port = port_or_free(0, taken)
    taken.add(agg_port)
    containers = Containers(engine, vigil_image, f"vigil-test-{agg_port}")
    try:
        agg = tmp_path / "aggregator.yaml"
        agg.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"url": broker.url, "reconnect_max": "1s"},
                    "listen": f"127.0.0.1:{agg_port}",
                    "regions": list(REGIONS),
                    "startup_grace": "2s",
                    "client_id": f"vigil-image-test-{agg_port}",
                    # The image's volume, owned by its user: the history must open there.
                    "storage": {"path": "/var/lib/vigil/history.sqlite"},
                }
            )
        )
        agg.chmod(0o644)
        aggregator = containers.start(
            "aggregator", "vigil-aggregator", agg, f"http://127.0.0.1:{agg_port}/healthz"
        )
        probes = []
        for region in REGIONS:
            port = port_or_free(0, taken)
            taken.add(port)
            config = tmp_path / f"probe-{region}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "region": region,
                        "probe_id": f"{region}-1",
                        "mqtt": {"url": broker.url, "reconnect_max": "1s"},
                        "listen": f"127.0.0.1:{port}",
                        "targets": [
                            {
                                "name": "api",
                                "url": target,
                                "interval": "1s",
                                "timeout": "800ms",
                                "version_auth_header": "Bearer sk-demo",
                            }
                        ],
                    }
                )
            )
            config.chmod(0o644)
            probes.append(
                containers.start(
                    f"probe-{region}", "vigil-probe", config, f"http://127.0.0.1:{port}/healthz"
                )
            )

        def verdict_up() -> bool:
            status = get_json(f"http://127.0.0.1:{agg_port}/api/v1/status")
            if not status or not status.get("targets"):
                return False
            row = status["targets"][0]
            return bool(row["verdict"] == "up" and all(r["last_result"] for r in row["regions"]))

        poll(verdict_up, 90, "the aggregator container to judge the probes' results up")
        for name in (aggregator, *probes):
            poll(functools.partial(engine.healthy, name), 60, f"{name} HEALTHCHECK")
        history = get_json(f"http://127.0.0.1:{agg_port}/api/v1/uptime")
        assert history is not None, "the history (on the image's volume) answers"

        # The image's STOPSIGNAL, within compose's stop_grace_period: a clean stop, exit 0.
        started = time.monotonic()
        engine.run("stop", "--time", "15", aggregator, timeout=60)
        assert time.monotonic() - started < 14, "stopped by SIGTERM, not by the SIGKILL after 15 s"
        code = engine.run("inspect", "--format", "{{.State.ExitCode}}", aggregator).stdout.strip()
        assert code == "0", containers.logs(aggregator)[-2000:]
        assert "aggregator_stopped" in containers.logs(aggregator)
        engine.run("stop", "--time", "15", probes[0], timeout=60)
        code = engine.run("inspect", "--format", "{{.State.ExitCode}}", probes[0]).stdout.strip()
        assert code == "0", containers.logs(probes[0])[-2000:]
        assert "probe_stopped" in containers.logs(probes[0])
    except BaseException:
        for name in containers.names:
            sys.stderr.write(f"--- {name}\n{containers.logs(name)[-3000:]}\n")
        raise
    finally:
        containers.remove()
