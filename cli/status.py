"""`vigil status`: the aggregator's verdicts as a table, or raw JSON, with a useful exit code.

By default only the problems (down, degraded, unknown) are listed, followed by a summary of
every verdict: at 10,000 targets nobody reads 9,700 healthy rows. `--all` lists every target.
Either way every page of the API's listing is fetched, so nothing is missed past the first.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import quote, urlencode, urlsplit

from runtime.clock import utc_clock

EXIT_UP, EXIT_DEGRADED, EXIT_DOWN, EXIT_UNREACHABLE = 0, 1, 2, 3
# Problems first, as the aggregator orders them.
VERDICTS = ("down", "degraded", "unknown", "up")
PROBLEMS = VERDICTS[:3]
# The API's largest page: fewest requests when walking every page.
PAGE_LIMIT = 1000


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


def counts_exit_code(counts: Mapping[str, int]) -> int:
    """The same as `exit_code`, from the API's counts over every target."""
    if counts.get("down"):
        return EXIT_DOWN
    if counts.get("total") and counts.get("up") == counts["total"]:
        return EXIT_UP
    return EXIT_DEGRADED


def summary(counts: Mapping[str, int]) -> str:
    """One line: how many targets have each verdict, problems first."""
    parts = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    total = counts.get("total", 0)
    return f"{total} target{'' if total == 1 else 's'}: {parts}"


def fetch_listing(
    base: str, token: str | None, params: Mapping[str, str], *, max_pages: int = 10_000
) -> dict[str, Any]:
    """Every page of `/api/v1/status` for `params`, as one document with every target.

    Raises:
        UnreachableError: as `fetch`.
    """
    cursor: str | None = None
    targets: list[Any] = []
    doc: dict[str, Any] = {}
    for _ in range(max_pages):
        asked = {**params, "limit": str(PAGE_LIMIT)}
        if cursor is not None:
            asked["cursor"] = cursor
        doc = fetch(f"{base}/api/v1/status?{urlencode(asked, safe=',')}", token)
        targets.extend(doc["targets"])
        cursor = doc.get("next_cursor")
        if cursor is None:
            break
    # The counts are the last page's, the freshest; the targets are every page's.
    return {**doc, "targets": targets, "next_cursor": None}


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
    status = region.get("version_status")
    if why and isinstance(status, int):
        why = f"{why} ({status})"  # the status a refused fetch got: `auth (403)`
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


def run(
    url: str,
    target: str | None,
    as_json: bool,
    token: str | None,
    out: TextIO,
    *,
    show_all: bool = False,
) -> int:
    """Print the problems (or with `show_all` every target) and a summary; return the exit code.

    The exit code covers every target, whichever are printed.
    """
    base = url.rstrip("/")
    try:
        if target is not None:
            detail = fetch(f"{base}/api/v1/targets/{quote(target, safe='')}", token)
            one = {"regions": [r["region"] for r in detail["regions"]], "targets": [detail]}
            out.write((json.dumps(detail, indent=2) if as_json else table(one)) + "\n")
            return exit_code([detail])
        status = fetch_listing(base, token, {} if show_all else {"verdict": ",".join(PROBLEMS)})
    except UnreachableError as exc:
        print(f"vigil status: cannot reach the aggregator: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    counts = status.get("counts")
    if counts is None:  # an aggregator from before the listing had counts: every target
        return _run_unpaged(status, as_json, out)
    if as_json:
        out.write(json.dumps(status, indent=2) + "\n")
    elif show_all or status["targets"]:
        out.write(table(status) + "\n" + summary(counts) + "\n")
    else:
        out.write(summary(counts) + "\n")
    if not show_all and not as_json and counts.get("up"):
        out.write(f"({counts['up']} up not listed; --all lists every target)\n")
    return counts_exit_code(counts)


def _run_unpaged(status: Mapping[str, Any], as_json: bool, out: TextIO) -> int:
    out.write((json.dumps(status, indent=2) if as_json else table(status)) + "\n")
    return exit_code(status["targets"])
