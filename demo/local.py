"""Running Vigil's parts as local processes on 127.0.0.1: ports and a throwaway broker.

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
