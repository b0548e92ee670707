"""Running Vigil's parts as local processes on 127.0.0.1: ports, a broker, an Alertmanager.

Shared by the local runner, the integration tests and the benchmarks.
"""

from __future__ import annotations

import ctypes
import getpass
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Collection
from pathlib import Path

# <linux/prctl.h>: the signal the kernel sends a process when the thread that forked it exits.
PR_SET_PDEATHSIG = 1


# Ports this process has handed out: never handed out twice, bound yet or not.
_HANDED: set[int] = set()
_RANDOM = random.SystemRandom()
_WARNED: list[bool] = []  # free_port's fallback was announced


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The ports the kernel gives outgoing connections and `bind(0)` (Linux's default else)."""
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _listen_ports() -> list[range]:
    """Where to look for a listening port: outside the ephemeral range, above 10000."""
    ephemeral = ephemeral_range()
    spans = [range(10000, ephemeral.start), range(ephemeral.stop, 65536)]
    return [span for span in spans if len(span) >= 1000]


def free_port(avoid: Collection[int] = ()) -> int:
    """A loopback TCP port that nothing listens on now and that stays free until bound.

    Picked outside the kernel's ephemeral range: a port from `bind(0)` is free only until
    the next outgoing connection, which may take it as its own local port (probes open
    hundreds a second), and the service it was meant for then fails to bind. Never one this
    process handed out before, nor one in `avoid`.
    """
    spans = _listen_ports()
    for _ in range(500 if spans else 0):
        span = _RANDOM.choice(spans)
        port = span[_RANDOM.randrange(len(span))]
        if port not in _HANDED and port not in avoid and port_free(port, reuse_addr=False):
            _HANDED.add(port)
            return port
    if not spans and not _WARNED:
        _WARNED.append(True)
        warnings.warn(
            f"no span of 1000 ports above 10000 outside the ephemeral range "
            f"{ephemeral_range().start}-{ephemeral_range().stop - 1}: listening ports come "
            "from bind(0), where an outgoing connection may take one before it is bound",
            RuntimeWarning,
            stacklevel=2,
        )
    while True:  # no room outside the ephemeral range: take the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED and port not in avoid:
            _HANDED.add(port)
            return port


def port_or_free(preferred: int, avoid: Collection[int] = ()) -> int:
    """`preferred` if it is free on loopback, else a `free_port`; never one in `avoid`.

    `avoid` holds ports promised to a process that has not bound them yet (another
    process's promises, which this one's memory does not hold).
    """
    if (
        preferred
        and preferred not in avoid
        and preferred not in _HANDED
        and port_free(preferred, reuse_addr=False)
    ):
        _HANDED.add(preferred)
        return preferred
    return free_port(avoid)


def port_free(port: int, *, reuse_addr: bool = True) -> bool:
    """Whether a service could bind 127.0.0.1:`port` now.

    `reuse_addr` as servers bind (a port in TIME_WAIT counts as free); without it, as
    `free_port` asks, only a port with no socket on it at all.
    """
    return bind_error(port, reuse_addr=reuse_addr) is None


def bind_error(port: int, *, reuse_addr: bool = True) -> OSError | None:
    """Why a service could not bind 127.0.0.1:`port` now (in use, privileged), or None."""
    with socket.socket() as s:
        if reuse_addr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc
        return None


def wait_port(port: int, limit: float = 15.0, alive: Callable[[], bool] | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`.

    `alive`, when given, says whether the process meant to listen there still runs: one
    that exited (its port taken, say) fails at once instead of counting another's port.

    Raises:
        TimeoutError: nothing listened within `limit` seconds.
        ChildExited: `alive()` turned false first.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ChildExited(f"the process meant to listen on 127.0.0.1:{port} exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {limit:g}s")


def wait_http(url: str, alive: Callable[[], bool], limit: float = 30.0) -> None:
    """Block until `url` answers 200 `{"status": "ok"}` (Vigil's `/healthz`) while `alive()`.

    An open port is not enough: whatever else took the port (a broker, say) accepts the
    connection and never answers, and everything after would talk to the wrong service;
    another HTTP server there answers, but not this.

    Raises:
        TimeoutError: no such answer within `limit` seconds.
        ChildExited: the server's process ended first.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not alive():
            raise ChildExited(f"the process serving {url} exited")
        try:
            status, body = loopback_get(url, timeout=2.0, limit=4096)
            if status == 200 and json.loads(body) == {"status": "ok"}:
                return
        except (OSError, ValueError, http.client.HTTPException):
            pass  # not up yet, not HTTP, or not Vigil's answer
        time.sleep(0.1)
    raise TimeoutError(f"no answer from {url} after {limit:g}s")


# Our own children on 127.0.0.1 are never behind a proxy: an `http_proxy` in the
# environment (without 127.0.0.1 in `no_proxy`) would send these requests elsewhere.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def loopback_get(url: str, timeout: float, limit: int = 1 << 20) -> tuple[int, bytes]:
    """GET `url` directly, whatever the proxy settings: (status, first `limit` bytes of body).

    Raises:
        OSError: no connection, or a 4xx/5xx answer (`urllib.error.HTTPError`).
        http.client.HTTPException: the answer was not HTTP.
    """
    with _DIRECT.open(url, timeout=timeout) as resp:
        return int(resp.status), bytes(resp.read(limit))


class ChildExited(RuntimeError):
    """A process the runner started ended before it was ready."""


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel SIGKILL the child when this process dies.

    So a parent killed with SIGKILL (or crashing) leaves nothing running behind it. Linux
    only (`PR_SET_PDEATHSIG`); None elsewhere. Call it, and start the child, from the main
    thread, before starting any other thread: the signal fires when the *thread* that forked
    the child ends, and a `preexec_fn` runs between fork and exec, where another thread's
    lock (the allocator's, the import lock) can deadlock the child.

    Raises:
        OSError: (in the parent, through `Popen`) the kernel refused the setting.
    """
    if sys.platform != "linux":
        return None
    # Loaded here, in the parent: between fork and exec the child only makes the call.
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        # The parent may have died between fork and prctl; then nobody will signal this
        # child, which has been adopted by another process (prctl(2) advises this check).
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


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
