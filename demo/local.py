"""Running Vigil's parts as local processes on 127.0.0.1: ports, a broker, an Alertmanager.

Shared by the local runner, the integration tests and the benchmarks.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_or_free(preferred: int) -> int:
    """`preferred` if it is free on loopback, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, limit: float = 15.0) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`.

    Raises:
        TimeoutError: nothing listened within `limit` seconds.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {limit:g}s")


def mosquitto_binary() -> str | None:
    """Path of Debian's mosquitto (in /usr/sbin, often not on a user's PATH), or None."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


def mosquitto_conf(port: int, workdir: Path, *, persistence: bool = False, extra: str = "") -> str:
    """A mosquitto config for a loopback-only, anonymous broker logging into `workdir`."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Started as root, mosquitto would switch to its own user and lose `workdir`.
        f"user {getpass.getuser()}",
        f"log_dest file {workdir}/mosquitto.log",
    ]
    if persistence:
        lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
    return "\n".join(lines) + "\n" + extra


def alertmanager_binary() -> str | None:
    """Path of Debian's prometheus-alertmanager, or None."""
    return shutil.which("prometheus-alertmanager")


def alertmanager_config(webhook: str | None = None) -> dict[str, object]:
    """An Alertmanager config grouped by alert and target, notifying `webhook` or nobody."""
    receiver: dict[str, object] = {"name": "local"}
    if webhook is not None:
        receiver["webhook_configs"] = [{"url": webhook, "send_resolved": True}]
    return {
        "route": {
            "receiver": "local",
            "group_by": ["alertname", "target"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }


def alertmanager_args(
    binary: str, config: Path, workdir: Path, port: int, cluster: str = ""
) -> list[str]:
    """The command line of an Alertmanager on 127.0.0.1:`port`, alone unless `cluster` is set."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--cluster.listen-address={cluster}",
    ]
