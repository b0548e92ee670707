"""The local runner's ports: none handed to two services, and a port is not proof of HTTP."""

from __future__ import annotations

import contextlib
import errno
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo import local
from demo.local import (
    ChildExited,
    bind_error,
    ephemeral_range,
    free_port,
    loopback_get,
    port_free,
    port_or_free,
    wait_http,
)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a broker, say)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    held.append(server.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield int(server.getsockname()[1])
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()


@contextlib.contextmanager
def answering(body: bytes) -> Iterator[str]:
    """An HTTP server on loopback answering every GET with 200 and `body`; its /healthz URL."""

    class Fixed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz"
    finally:
        server.shutdown()
        server.server_close()


def test_a_promised_port_is_never_handed_out_again() -> None:
    promised = port_or_free(0)
    # Preferred and free, but promised to a process that has not bound it yet.
    assert port_or_free(promised, avoid={promised}) != promised


def test_a_busy_preferred_port_falls_back_outside_the_promised(silent_listener: int) -> None:
    promised = {port_or_free(0) for _ in range(20)}
    for _ in range(50):
        port = port_or_free(silent_listener, avoid=promised)
        assert port != silent_listener
        assert port not in promised


def test_port_free_sees_a_listener(silent_listener: int) -> None:
    assert not port_free(silent_listener)
    assert port_free(port_or_free(0))


def test_an_open_port_that_never_answers_http_is_not_ready(silent_listener: int) -> None:
    with pytest.raises(TimeoutError, match="no answer from"):
        wait_http(f"http://127.0.0.1:{silent_listener}/healthz", alive=lambda: True, limit=3.0)


def test_a_server_process_that_exited_is_reported_at_once(silent_listener: int) -> None:
    with pytest.raises(ChildExited):
        wait_http(f"http://127.0.0.1:{silent_listener}/healthz", alive=lambda: False, limit=30.0)


def test_a_promised_port_the_kernel_hands_out_is_asked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forced: the kernel's first two free ports are the promised one."""
    handed = iter([50001, 50001, 50002])

    class Scripted:
        port = 0

        def __enter__(self) -> Scripted:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            if address[1] != 0:
                raise OSError("in use")
            self.port = next(handed)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", Scripted)
    # Ports handed out earlier in this process (by other tests, from the real kernel) would
    # be skipped too, and ask the script for a fourth port.
    monkeypatch.setattr(local, "_HANDED", set())
    assert port_or_free(8000, avoid={50001}) == 50002


def test_another_http_server_on_the_port_is_not_the_aggregator() -> None:
    """It answers HTTP, but not Vigil's `/healthz`: still not ready."""
    with answering(b'{"status": "healthy"}') as url, pytest.raises(TimeoutError):
        wait_http(url, alive=lambda: True, limit=2.0)


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outgoing connection cannot take one before its service binds it.

    The CI failure: an aggregator's promised port became a probe connection's local port.
    Linux's default range, whatever this machine's is.
    """
    ephemeral = range(32768, 61000)
    monkeypatch.setattr(local, "ephemeral_range", lambda: ephemeral)
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if p in ephemeral or p < 10000]


def test_with_no_room_outside_the_ephemeral_range_ports_come_from_the_kernel_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local, "ephemeral_range", lambda: range(1024, 65536))
    monkeypatch.setattr(local, "_WARNED", [])
    with pytest.warns(RuntimeWarning, match="outside the ephemeral range 1024-65535"):
        ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(port_free(p, reuse_addr=False) for p in ports)


def test_a_proxy_in_the_environment_does_not_reach_loopback_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`http_proxy` without 127.0.0.1 in `no_proxy`: the demo still talks to its children.

    The regression: urlopen sent the readiness check to the (dead) proxy; the demo waited
    30 s and exited 1.
    """
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)

    with answering(b'{"status": "ok"}') as url:
        wait_http(url, alive=lambda: True, limit=10.0)
        assert loopback_get(url, timeout=5) == (200, b'{"status": "ok"}')


def test_bind_error_says_why(silent_listener: int) -> None:
    busy = bind_error(silent_listener)
    assert busy is not None
    assert busy.errno == errno.EADDRINUSE


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t50000\n")
    assert ephemeral_range(setting) == range(40000, 50001)
    assert ephemeral_range(tmp_path / "absent") == range(32768, 61000)
