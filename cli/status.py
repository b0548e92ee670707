"""`vigil status`: the aggregator's verdicts as a table, or raw JSON, with a useful exit code."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from runtime.clock import utc_clock

EXIT_UP, EXIT_DEGRADED, EXIT_DOWN, EXIT_UNREACHABLE = 0, 1, 2, 3


class UnreachableError(Exception):
    """The aggregator could not be asked, or refused to answer."""


def fetch(url: str, token: str | None, timeout: float = 10.0) -> Any:
    """GET a JSON document from the aggregator.

    Raises:
        UnreachableError: connection failure, timeout, non-2xx or a body that is not JSON.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise UnreachableError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - checked above
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode(errors="replace")
        raise UnreachableError(f"{url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnreachableError(f"{url}: {reason}") from None
    except ValueError:
        raise UnreachableError(f"{url}: the answer is not JSON") from None


def exit_code(targets: Sequence[Mapping[str, Any]]) -> int:
    """0 when every target is up, 2 when any is down, else 1."""
    verdicts = {t["verdict"] for t in targets}
    if "down" in verdicts:
        return EXIT_DOWN
    if verdicts <= {"up"} and targets:
        return EXIT_UP
    return EXIT_DEGRADED


def _cell(region: Mapping[str, Any]) -> str:
    if region.get("last_result") is None:
        text = "no data"
    elif region["stale"]:
        text = "STALE"
    elif region["failing"]:
        text = f"FAIL x{region['consecutive_failures']}"
    else:
        text = f"ok +{region['consecutive_successes']}"
    # Read from the API's JSON, as any client would; the aggregator's page says it alike.
    version, why = region.get("version"), region.get("version_error")
    if version and why:
        text += f" {version} (last fetch: {why})"
    elif version:
        text += f" {version}"
    elif why:
        text += f" version unknown: {why}"
    return text


def _last_error(target: Mapping[str, Any]) -> str:
    for region in target["regions"]:
        last = region.get("last_result") or {}
        if last.get("error_kind"):
            return f"{region['region']}: {last['error_kind']}: {last.get('error') or ''}"[:80]
    return ""


def table(status: Mapping[str, Any]) -> str:
    """A compact targets x regions table."""
    regions = list(status["regions"])
    header = ["TARGET", "VERDICT", "SINCE", *regions, "LAST ERROR"]
    rows = [header]
    for t in status["targets"]:
        by_region = {r["region"]: r for r in t["regions"]}
        verdict = t["verdict"] + (" (degraded quorum)" if t.get("quorum_degraded") else "")
        rows.append(
            [
                t["target"],
                verdict,
                utc_clock(t["since"]),
                *(_cell(by_region[r]) if r in by_region else "-" for r in regions),
                _last_error(t),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if not status["targets"]:
        lines.append("(no targets yet)")
    return "\n".join(lines)


def run(url: str, target: str | None, as_json: bool, token: str | None, out: TextIO) -> int:
    """Print the status and return the exit code."""
    base = url.rstrip("/")
    try:
        if target is not None:
            detail = fetch(f"{base}/api/v1/targets/{quote(target, safe='')}", token)
            status = {"regions": [r["region"] for r in detail["regions"]], "targets": [detail]}
            raw: Any = detail
        else:
            status = raw = fetch(f"{base}/api/v1/status", token)
    except UnreachableError as exc:
        print(f"vigil status: cannot reach the aggregator: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    out.write((json.dumps(raw, indent=2) if as_json else table(status)) + "\n")
    return exit_code(status["targets"])
