"""The local runner's ports: none handed to two services, and a port is not proof of HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from demo.local import ChildExited, port_free, port_or_free, wait_http


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
    with pytest.raises(TimeoutError, match="no HTTP answer"):
        wait_http(f"http://127.0.0.1:{silent_listener}/healthz", alive=lambda: True, limit=3.0)


def test_a_server_process_that_exited_is_reported_at_once(silent_listener: int) -> None:
    with pytest.raises(ChildExited):
        wait_http(f"http://127.0.0.1:{silent_listener}/healthz", alive=lambda: False, limit=30.0)
