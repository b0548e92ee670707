"""`vigil announce`, `vigil note`, `vigil maintenance`: operators writing to the aggregator.

Each is one request to the aggregator's API. Exit codes: 0 done, 1 the aggregator refused
(a 4xx, its `error` printed) or, for `maintenance`, the window is recorded but not every
Alertmanager holds its silence, 3 the aggregator cannot be reached or failed (5xx).
"""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from cli.status import UnreachableError
from runtime.config import parse_duration

EXIT_DONE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 3
# A maintenance window longer than this is more likely a typo than a plan.
MAX_WINDOW = 7 * 86400.0


class RefusedError(Exception):
    """The aggregator answered with a 4xx; the message is its `error`."""


def parse_window(text: str) -> float:
    """A maintenance window's length: `90s`, `30m`, `2h`, `1d` (or mixed, `1h30m`) in seconds.

    Raises:
        ValueError: not a duration, not positive, or longer than 7 days.
    """
    try:
        seconds = parse_duration(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid duration {text!r}: use a positive length like 90s, 30m, 2h or 1d"
        ) from None
    if not seconds > 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    if seconds > MAX_WINDOW:
        raise ValueError(f"a maintenance window is at most 7 days, got {text!r}")
    return seconds


def call(method: str, url: str, token: str | None, body: Any = None, timeout: float = 10.0) -> Any:
    """Send one request to the aggregator and return its JSON answer.

    Raises:
        RefusedError: a 4xx, with the aggregator's `error` message.
        UnreachableError: connection failure, timeout, a 5xx or an answer that is not JSON.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise UnreachableError(f"not an http(s) URL: {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, method=method, headers={"Accept": "application/json"}
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - checked above
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        if 400 <= exc.code < 500:
            raise RefusedError(f"HTTP {exc.code}: {_error_message(detail)}") from None
        raise UnreachableError(f"{url}: HTTP {exc.code} {detail[:200]}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnreachableError(f"{url}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise UnreachableError(f"{url}: the answer is not JSON") from None


def _error_message(detail: str) -> str:
    try:
        doc = json.loads(detail)
    except ValueError:
        return detail.strip() or "(no reason given)"
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return detail.strip()


def utc_moment(ts: float) -> str:
    """Epoch seconds as `YYYY-MM-DD HH:MM:SSZ`."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _ask(
    command: str, method: str, url: str, token: str | None, body: Any, err: TextIO
) -> tuple[int, Any]:
    """One request, its failure printed as `vigil COMMAND: ...`; (exit code, JSON object)."""
    try:
        answer = call(method, url, token, body)
        if not isinstance(answer, dict):
            raise UnreachableError(f"{url}: the answer is not a JSON object")
    except RefusedError as exc:
        print(f"vigil {command}: the aggregator refused: {exc}", file=err)
        return EXIT_REFUSED, None
    except UnreachableError as exc:
        print(f"vigil {command}: cannot reach the aggregator: {exc}", file=err)
        return EXIT_UNREACHABLE, None
    return EXIT_DONE, answer


def announce(
    url: str,
    text: str | None,
    clear: bool,
    as_json: bool,
    token: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Set the status page's announcement to `text`, or with `clear` remove it."""
    endpoint = f"{url.rstrip('/')}/api/v1/announcements"
    if clear:
        code, answer = _ask("announce", "DELETE", endpoint, token, None, err)
    else:
        code, answer = _ask("announce", "POST", endpoint, token, {"text": text or ""}, err)
    if code != EXIT_DONE:
        return code
    if as_json:
        out.write(json.dumps(answer, indent=2) + "\n")
    elif clear:
        out.write("announcement cleared\n")
    else:
        at = answer.get("at") if isinstance(answer, dict) else None
        when = f" at {utc_moment(at)}" if isinstance(at, int | float) else ""
        out.write(f"announcement set{when}: {answer.get('text', text)}\n")
    return EXIT_DONE


def note(
    url: str,
    incident_id: int,
    text: str,
    as_json: bool,
    token: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Add a note to incident `incident_id`."""
    endpoint = f"{url.rstrip('/')}/api/v1/incidents/{quote(str(incident_id), safe='')}/note"
    code, answer = _ask("note", "POST", endpoint, token, {"text": text}, err)
    if code != EXIT_DONE:
        return code
    if as_json:
        out.write(json.dumps(answer, indent=2) + "\n")
    else:
        out.write(f"incident {incident_id}: note saved\n")
    return EXIT_DONE


def _silenced(window: Mapping[str, Any]) -> tuple[int, int]:
    """(peers holding the window's silence, peers asked)."""
    silences = window.get("silences") or {}
    errors = window.get("errors") or {}
    held = sum(1 for sid in silences.values() if sid)
    return held, len(set(silences) | set(errors))


def maintenance(
    url: str,
    target: str,
    duration_s: float,
    reason: str,
    as_json: bool,
    token: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Open a maintenance window on `target`; 1 when not every Alertmanager silenced it."""
    endpoint = f"{url.rstrip('/')}/api/v1/maintenance"
    body = {"target": target, "duration_s": duration_s, "reason": reason}
    code, window = _ask("maintenance", "POST", endpoint, token, body, err)
    if code != EXIT_DONE:
        return code
    if as_json:
        out.write(json.dumps(window, indent=2) + "\n")
    else:
        held, asked = _silenced(window)
        out.write(
            f"maintenance {window.get('id')} on {window.get('target', target)}: "
            f"{utc_moment(window['starts_at'])} to {utc_moment(window['ends_at'])} (UTC); "
            f"silenced on {held} of {asked} Alertmanager{'' if asked == 1 else 's'}\n"
        )
    errors = window.get("errors") or {}
    if errors:
        print(
            "vigil maintenance: the window is recorded, but not every Alertmanager silenced it:",
            file=err,
        )
        for peer, why in sorted(errors.items()):
            print(f"  {peer}: {why}", file=err)
        return EXIT_REFUSED
    return EXIT_DONE


def windows_table(windows: list[Mapping[str, Any]]) -> str:
    """The maintenance windows, one row each."""
    header = ["ID", "TARGET", "STARTS (UTC)", "ENDS (UTC)", "SILENCED", "REASON"]
    rows = [header]
    for w in windows:
        held, asked = _silenced(w)
        rows.append(
            [
                str(w.get("id", "")),
                str(w.get("target", "")),
                utc_moment(w["starts_at"]),
                utc_moment(w["ends_at"]),
                f"{held}/{asked}",
                str(w.get("reason", "")),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if not windows:
        lines.append("(no maintenance windows)")
    return "\n".join(lines)


def maintenance_list(url: str, as_json: bool, token: str | None, out: TextIO, err: TextIO) -> int:
    """Print the maintenance windows the aggregator holds."""
    endpoint = f"{url.rstrip('/')}/api/v1/maintenance"
    code, answer = _ask("maintenance", "GET", endpoint, token, None, err)
    if code != EXIT_DONE:
        return code
    if as_json:
        out.write(json.dumps(answer, indent=2) + "\n")
    else:
        out.write(windows_table(list(answer.get("windows", []))) + "\n")
    return EXIT_DONE


def maintenance_end(
    url: str, window_id: int, as_json: bool, token: str | None, out: TextIO, err: TextIO
) -> int:
    """End a maintenance window now; 1 when an Alertmanager could not expire its silence."""
    endpoint = f"{url.rstrip('/')}/api/v1/maintenance/{quote(str(window_id), safe='')}"
    code, window = _ask("maintenance", "DELETE", endpoint, token, None, err)
    if code != EXIT_DONE:
        return code
    if as_json:
        out.write(json.dumps(window, indent=2) + "\n")
    else:
        out.write(
            f"maintenance {window.get('id')} on {window.get('target')}: ended "
            f"{utc_moment(window['ends_at'])} (UTC)\n"
        )
    errors = window.get("errors") or {}
    if errors:
        print("vigil maintenance: ended; what the Alertmanagers said went wrong:", file=err)
        for peer, why in sorted(errors.items()):
            print(f"  {peer}: {why}", file=err)
        return EXIT_REFUSED
    return EXIT_DONE
