"""`vigil announce`, `note` and `maintenance` against a scripted aggregator on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cli.history import parse_window
from cli.main import main
from demo.local import free_port

TOKEN = "op-token"
# 2026-01-01T10:00:00Z
T0 = 1_767_261_600.0


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class Aggregator:
    """Answers every request with `status` and `answer`, recording what it was sent."""

    url: str = ""
    status: int = 200
    answer: Any = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
def aggregator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aggregator]:
    agg = Aggregator()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            agg.seen.append(Seen(self.command, self.path, body, dict(self.headers)))
            data = json.dumps(agg.answer).encode()
            self.send_response(agg.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    agg.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("VIGIL_TOKEN", TOKEN)
    monkeypatch.setenv("VIGIL_URL", agg.url)
    try:
        yield agg
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def window(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": 7,
        "target": "checkout",
        "starts_at": T0,
        "ends_at": T0 + 1800,
        "reason": "deploy 42",
        "silences": {"http://am-a:9093": "s-a", "http://am-b:9093": "s-b"},
        "errors": {},
    }
    doc.update(extra)
    return doc


def test_announce_posts_the_text(
    aggregator: Aggregator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`announce TEXT` POSTs it with the token and prints when it was set."""
    aggregator.answer = {"text": "checkout is slow", "at": T0}
    assert main(["announce", "checkout is slow"]) == 0
    [seen] = aggregator.seen
    assert (seen.method, seen.path, seen.body) == (
        "POST",
        "/api/v1/announcements",
        {"text": "checkout is slow"},
    )
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Content-Type"] == "application/json"
    assert capsys.readouterr().out == "announcement set at 2026-01-01 10:00:00Z: checkout is slow\n"


def test_announce_clear_deletes(aggregator: Aggregator, capsys: pytest.CaptureFixture[str]) -> None:
    """`announce --clear` DELETEs the announcement."""
    aggregator.answer = {"cleared": True}
    assert main(["announce", "--clear"]) == 0
    [seen] = aggregator.seen
    assert (seen.method, seen.path, seen.body) == ("DELETE", "/api/v1/announcements", None)
    assert capsys.readouterr().out == "announcement cleared\n"


@pytest.mark.parametrize("argv", [["announce"], ["announce", "text", "--clear"]])
def test_announce_needs_text_or_clear_not_both(
    aggregator: Aggregator, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither or both is a usage error, and nothing is sent."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert aggregator.seen == []
    assert "usage" in capsys.readouterr().err


def test_json_prints_the_raw_answer(
    aggregator: Aggregator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` prints the aggregator's answer as it came."""
    aggregator.answer = {"text": "hi", "at": T0}
    assert main(["announce", "hi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"text": "hi", "at": T0}


def test_note_posts_to_the_incident(
    aggregator: Aggregator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`note ID TEXT` POSTs the text to that incident's note."""
    aggregator.answer = {"id": 12, "notes": [{"text": "rolled back"}]}
    assert main(["note", "12", "rolled back"]) == 0
    [seen] = aggregator.seen
    assert (seen.method, seen.path, seen.body) == (
        "POST",
        "/api/v1/incidents/12/note",
        {"text": "rolled back"},
    )
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert capsys.readouterr().out == "incident 12: note saved\n"


def test_note_needs_an_integer_id(aggregator: Aggregator) -> None:
    """An incident id that is not a number is a usage error."""
    with pytest.raises(SystemExit) as exc:
        main(["note", "../status", "text"])
    assert exc.value.code == 2
    assert aggregator.seen == []


@pytest.mark.parametrize(
    "argv",
    [
        ["maintenance", "checkout", "--for", "30m", "deploy 42"],
        ["maintenance", "checkout", "deploy 42", "--for", "30m"],
        ["maintenance", "--for", "30m", "checkout", "deploy 42"],
    ],
)
def test_maintenance_posts_the_window(
    aggregator: Aggregator, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The target, the length in seconds and the reason are sent, wherever --for stands."""
    aggregator.answer = window()
    assert main(argv) == 0
    [seen] = aggregator.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/maintenance")
    assert seen.body == {"target": "checkout", "duration_s": 1800.0, "reason": "deploy 42"}
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    out = capsys.readouterr()
    assert out.out == (
        "maintenance 7 on checkout: 2026-01-01 10:00:00Z to 2026-01-01 10:30:00Z (UTC); "
        "silenced on 2 of 2 Alertmanagers\n"
    )
    assert out.err == ""


def test_maintenance_with_a_peer_error_is_exit_1(
    aggregator: Aggregator, capsys: pytest.CaptureFixture[str]
) -> None:
    """The window is recorded but one Alertmanager has no silence: its error on stderr, exit 1."""
    aggregator.answer = window(
        silences={"http://am-a:9093": "s-a", "http://am-b:9093": None},
        errors={"http://am-b:9093": "ClientConnectorError: refused"},
    )
    assert main(["maintenance", "checkout", "--for", "2h", "deploy"]) == 1
    assert aggregator.seen[0].body["duration_s"] == 7200.0
    out = capsys.readouterr()
    assert "silenced on 1 of 2 Alertmanagers" in out.out
    assert "http://am-b:9093: ClientConnectorError: refused" in out.err


@pytest.mark.parametrize(
    "argv",
    [
        ["maintenance", "checkout", "deploy"],  # no --for
        ["maintenance", "checkout", "--for", "30m"],  # no reason
        ["maintenance", "checkout", "--for", "8d", "deploy"],  # too long
        ["maintenance", "checkout", "--for", "soon", "deploy"],
        ["maintenance", "--list", "--for", "30m"],
        ["maintenance", "--list", "checkout"],
        ["maintenance", "checkout", "--for", "30m", "deploy", "extra"],
        ["maintenance", "checkout", "--for", "30m", "--bogus"],
    ],
)
def test_maintenance_usage_errors(aggregator: Aggregator, argv: list[str]) -> None:
    """A window without a length or reason, or a bad one, is refused before anything is sent."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert aggregator.seen == []


def test_maintenance_list_prints_a_table(
    aggregator: Aggregator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`maintenance --list` GETs the windows and prints one row each."""
    aggregator.answer = {"windows": [window()]}
    assert main(["maintenance", "--list"]) == 0
    [seen] = aggregator.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/api/v1/maintenance", None)
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "TARGET",
        "STARTS",
        "(UTC)",
        "ENDS",
        "(UTC)",
        "SILENCED",
        "REASON",
    ]
    assert lines[1].split() == [
        "7",
        "checkout",
        "2026-01-01",
        "10:00:00Z",
        "2026-01-01",
        "10:30:00Z",
        "2/2",
        "deploy",
        "42",
    ]


def test_maintenance_list_empty(aggregator: Aggregator, capsys: pytest.CaptureFixture[str]) -> None:
    """No windows says so."""
    aggregator.answer = {"windows": []}
    assert main(["maintenance", "--list"]) == 0
    assert "(no maintenance windows)" in capsys.readouterr().out


COMMANDS = [
    ["announce", "hello"],
    ["announce", "--clear"],
    ["note", "3", "text"],
    ["maintenance", "checkout", "--for", "30m", "deploy"],
    ["maintenance", "--list"],
]


@pytest.mark.parametrize("argv", COMMANDS)
def test_a_400_is_exit_1_with_the_aggregators_error(
    aggregator: Aggregator, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal prints the aggregator's `error` message and exits 1."""
    aggregator.status, aggregator.answer = 400, {"error": "no such target: checkout"}
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "refused" in err
    assert "HTTP 400: no such target: checkout" in err


@pytest.mark.parametrize("argv", COMMANDS)
def test_a_500_is_exit_3(
    aggregator: Aggregator, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The aggregator failing is as good as unreachable."""
    aggregator.status, aggregator.answer = 500, {"error": "boom"}
    assert main(argv) == 3
    assert "cannot reach the aggregator" in capsys.readouterr().err


@pytest.mark.parametrize("argv", COMMANDS)
def test_connection_refused_is_exit_3(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody listening is exit 3."""
    monkeypatch.setenv("VIGIL_URL", f"http://127.0.0.1:{free_port()}")
    assert main(argv) == 3
    assert "cannot reach the aggregator" in capsys.readouterr().err


def test_url_option_and_no_token(aggregator: Aggregator, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--url` wins over $VIGIL_URL, and without a token no Authorization is sent."""
    monkeypatch.setenv("VIGIL_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("VIGIL_TOKEN")
    aggregator.answer = {"cleared": True}
    assert main(["announce", "--clear", "--url", aggregator.url + "/"]) == 0
    [seen] = aggregator.seen
    assert seen.path == "/api/v1/announcements"
    assert "Authorization" not in seen.headers


def test_only_http_urls(capsys: pytest.CaptureFixture[str]) -> None:
    """A file: URL is never opened."""
    assert main(["announce", "--clear", "--url", "file:///etc/passwd"]) == 3
    assert "not an http(s) URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d12h", 129600.0),
        ("1.5d", 129600.0),
        ("7d", 604800.0),
        ("600", 600.0),
    ],
)
def test_window_lengths(text: str, seconds: float) -> None:
    """--for takes seconds, minutes, hours and days."""
    assert parse_window(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0s", "positive"),
        ("0d", "positive"),
        ("-5m", "invalid"),
        ("7d1s", "at most 7 days"),
        ("8d", "at most 7 days"),
        ("", "invalid"),
        ("30x", "invalid"),
        ("d", "invalid"),
        ("1dd", "invalid"),
        ("nan", "invalid"),
    ],
)
def test_bad_window_lengths(text: str, why: str) -> None:
    """Zero, negative, over a week, or not a duration is refused with a reason."""
    with pytest.raises(ValueError, match=why):
        parse_window(text)


def test_maintenance_end_deletes_the_window(
    aggregator: Aggregator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`maintenance --end ID` DELETEs the window; a peer that could not expire is exit 1."""
    aggregator.answer = window()
    assert main(["maintenance", "--end", "7"]) == 0
    [seen] = aggregator.seen
    assert (seen.method, seen.path, seen.body) == ("DELETE", "/api/v1/maintenance/7", None)
    assert "ended" in capsys.readouterr().out
    aggregator.answer = {**window(), "errors": {"http://am-2:9093": "HTTP 500"}}
    assert main(["maintenance", "--end", "7"]) == 1
    assert "am-2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["maintenance", "--end", "7", "--for", "1h"])
    assert exc.value.code == 2
