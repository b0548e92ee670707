"""The status page, rendered by the aggregator itself: no CDN, no build step, no script.

Pure: views in, HTML out. Every cell says its state in words and a symbol as well as in
colour, so it reads without colour vision. The page refreshes itself. It shows one page of
targets at a time, problems first, under the counts, verdict links and a search form.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from html import escape
from urllib.parse import quote, urlencode

from aggregator.core.alerts import version_text
from aggregator.present.listing import MAX_SEARCH, PROBLEMS, VERDICTS, StatusQuery
from aggregator.present.schema import (
    AlertsResponse,
    ExplainResponse,
    RecentPoint,
    RegionStatus,
    StatusResponse,
    TargetDetail,
)
from runtime.clock import utc_clock

REFRESH_SECONDS = 10
# Rows per page of the grid: each row carries a sparkline per region, so fewer than the API.
ROWS = 50
# Alerts listed on the page, firing first; the API lists every one.
ALERTS_SHOWN = 20

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4rem;margin:0} h2{font-size:1.1rem;margin-top:2rem}
.meta{color:#555;margin:.2rem 0 1rem}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.45rem .6rem;vertical-align:top;text-align:left}
th{background:#f0f0f0}
.state{font-weight:700;display:block}
.detail{display:block;color:#444;font-size:12px;max-width:22rem;overflow-wrap:anywhere}
.ver{display:block;color:#555;font-size:12px}
.ok{background:#e7f6ea}.ok .state{color:#0a5a22}
.failing{background:#fde8e6}.failing .state{color:#8a1408}
.stale,.missing{background:#eeeeee}.stale .state,.missing .state{color:#444}
.up{background:#e7f6ea}.down{background:#fde8e6}.degraded{background:#fff4d6}
.unknown{background:#eeeeee}
.verdict .state{font-size:15px}
svg{display:block;margin-top:.25rem}
a{color:#0b4f9c}
.summary{font-size:15px;margin:.5rem 0}
.filters{display:flex;flex-wrap:wrap;gap:.4rem;list-style:none;padding:0;margin:.5rem 0}
.filters a{display:block;padding:.2rem .6rem;border:1px solid #bbb;border-radius:3px}
.filters a[aria-current]{font-weight:700;border-color:#1b1b1b;text-decoration:none}
form{margin:.5rem 0 1rem} input{font:inherit;padding:.2rem .4rem}
.paging{margin:1rem 0;display:flex;gap:1.5rem}
.banner{background:#fff4d6;border:1px solid #c99a00;padding:.5rem .8rem;margin:.5rem 0}
.banner.outage{background:#fde8e6;border-color:#b3261e}
"""

# The search box is a GET form to the page itself, hence form-action 'self' (the API's
# policy in edges/http.py still allows no form at all).
# The one inline <style> is allowed by its hash, so the policy needs no 'unsafe-inline' and a
# string that slipped past escaping could still neither run script nor restyle the page.
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

SYMBOL = {"up": "✔", "down": "✖", "degraded": "▲", "unknown": "?"}


def clock(ts: float | None) -> str:
    """A timestamp as HH:MM:SSZ (UTC), or a dash."""
    return utc_clock(ts, missing="—")


def _page(title: str, body: str, *, refresh: bool = True) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta name=viewport content="width=device-width,initial-scale=1">{meta}'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def sparkline(points: Sequence[RecentPoint], width: int = 90, height: int = 20) -> str:
    """Latency of recent results as an inline SVG line; failures marked with dots."""
    if len(points) < 2:
        return ""
    top = max(ms for _, ms, _, _ in points) or 1.0
    step = width / (len(points) - 1)

    def y(ms: float) -> float:
        return round(height - 2 - (height - 4) * ms / top, 1)

    line = " ".join(f"{round(i * step, 1)},{y(ms)}" for i, (_, ms, _, _) in enumerate(points))
    dots = "".join(
        f'<circle cx="{round(i * step, 1)}" cy="{y(ms)}" r="2" fill="#b3261e"/>'
        for i, (_, ms, _, outcome) in enumerate(points)
        if outcome != "ok"
    )
    label = f"latency of the last {len(points)} checks, up to {top:.0f} ms"
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<polyline points="{line}" fill="none" stroke="#555" stroke-width="1.2"/>{dots}</svg>'
    )


def _cell(r: RegionStatus, history: Sequence[RecentPoint]) -> str:
    if r.last_result is None:
        return '<td class="missing"><span class="state">- NO DATA</span></td>'
    if r.stale:
        css, state = "stale", f"◌ STALE ({escape(r.stale_reason or '')})"
    elif r.failing:
        css, state = "failing", f"✖ FAILING x{r.consecutive_failures}"
    else:
        css, state = "ok", "✔ OK"
    last = r.last_result
    detail = f"{last.status_code or '—'} in {last.duration_ms:.0f} ms"
    if last.health_path:
        # Which endpoint answered: a profile may have moved to another generation's.
        detail += f" on {last.health_path}"
    if last.error_kind:
        detail += f" · {last.error_kind}: {last.error or ''}"
    said = version_text(r.version, r.version_error, r.version_status)
    version = f'<span class="ver">{escape(said)}</span>' if said else ""
    return (
        f'<td class="cell {css}" data-region="{escape(r.region)}">'
        f'<span class="state">{state}</span><span class="detail">{escape(detail)}</span>'
        f"{version}{sparkline(history)}</td>"
    )


def _alerts(alerts: AlertsResponse) -> str:
    if not alerts.firing and not alerts.resolved:
        return "<p>No alerts firing.</p>"
    rows = []
    listed = [("firing", a) for a in alerts.firing] + [("resolved", a) for a in alerts.resolved]
    for status, a in listed[:ALERTS_SHOWN]:
        where = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k != "alertname")
        rows.append(
            f'<tr class="{"down" if status == "firing" else "up"}">'
            f"<td>{'▲ FIRING' if status == 'firing' else '✔ RESOLVED'}</td>"
            f"<td>{escape(a.labels.get('alertname', ''))}</td><td>{escape(where)}</td>"
            f"<td>{escape(a.annotations.get('summary', ''))}</td>"
            f"<td>{clock(a.starts_at)}</td></tr>"
        )
    more = ""
    if len(listed) > ALERTS_SHOWN:
        more = (
            f"<p>… and {len(listed) - ALERTS_SHOWN:,} more ({len(alerts.firing):,} firing, "
            f"{len(alerts.resolved):,} recently resolved in all): "
            "<a href='/api/v1/alerts'>/api/v1/alerts</a> lists every one.</p>"
        )
    return (
        "<table><thead><tr><th>Status</th><th>Alert</th><th>Labels</th><th>Summary</th>"
        f"<th>Since</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"
    )


def _href(params: dict[str, str]) -> str:
    """A link to the status page with these parameters, escaped for an attribute."""
    return escape("/?" + urlencode(params, safe=",") if params else "/")


def _filters(status: StatusResponse, query: StatusQuery) -> str:
    """Links that filter by verdict, each with how many targets it would show."""
    base = query.params()
    base.pop("verdict", None)
    m = status.matching
    by = {"down": m.down, "degraded": m.degraded, "unknown": m.unknown, "up": m.up}
    choices: list[tuple[frozenset[str] | None, str]] = [
        (PROBLEMS, f"Problems: {m.down + m.degraded + m.unknown:,}"),
        *((frozenset({v}), f"{SYMBOL[v]} {v.capitalize()}: {by[v]:,}") for v in VERDICTS),
        (None, f"All: {m.total:,}"),
    ]
    links = []
    for verdicts, label in choices:
        params = dict(base)
        if verdicts is not None:
            params["verdict"] = ",".join(v for v in VERDICTS if v in verdicts)
        current = ' aria-current="page"' if verdicts == query.verdicts else ""
        links.append(f'<li><a href="{_href(params)}"{current}>{escape(label)}</a></li>')
    return (
        f'<nav aria-label="Show targets by verdict"><ul class=filters>{"".join(links)}</ul></nav>'
    )


def _search(query: StatusQuery) -> str:
    """A GET form to this page: the search keeps the verdict and region filters."""
    keep = "".join(
        f'<input type=hidden name="{name}" value="{escape(value)}">'
        for name, value in query.params().items()
        if name in ("verdict", "region")
    )
    return (
        '<form method=get action="/" role=search><label for=q>Search targets by name</label> '
        f"<input type=search id=q name=q maxlength={MAX_SEARCH} "
        f'value="{escape(query.search or "")}">{keep} <button type=submit>Search</button></form>'
    )


def _paging(status: StatusResponse, query: StatusQuery) -> str:
    links = []
    if query.cursor is not None:
        links.append(f'<a href="{_href(query.params())}">⇤ First page</a>')
    if status.next_cursor is not None:
        links.append(
            f'<a href="{_href(query.params(cursor=status.next_cursor))}" rel=next>'
            f"Next {query.limit} →</a>"
        )
    return f'<nav aria-label="Pages" class=paging>{"".join(links)}</nav>' if links else ""


def status_page(
    status: StatusResponse,
    histories: Mapping[str, Mapping[str, Sequence[RecentPoint]]],
    alerts: AlertsResponse,
    query: StatusQuery | None = None,
    *,
    top: str = "",
    bottom: str = "",
) -> str:
    """Counts, filters and search, then a page of the grid (problems first), then the alerts.

    `top` (banners) and `bottom` (maintenance) are HTML from `historypage`.
    """
    query = query or StatusQuery()
    head = "".join(f"<th>{escape(r)}</th>" for r in status.regions)
    rows = []
    for t in status.targets:
        note = " (degraded quorum)" if t.quorum_degraded else ""
        skew = "<span class='detail'>version skew</span>" if t.version_skew else ""
        cells = "".join(_cell(r, histories.get(t.target, {}).get(r.region, [])) for r in t.regions)
        rows.append(
            f'<tr data-target="{escape(t.target)}">'
            f'<th><a href="/targets/{quote(t.target)}">{escape(t.target)}</a></th>'
            f'<td class="verdict {t.verdict}"><span class="state">{SYMBOL[t.verdict]} '
            f"{t.verdict.upper()}</span><span class='detail'>since {clock(t.since)}{note}</span>"
            f"{skew}</td>{cells}</tr>"
        )
    empty = "No targets match." if status.counts.total else "No targets yet."
    table = (
        f"<table class=grid><thead><tr><th>Target</th><th>Verdict</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows) or f'<tr><td colspan={2 + len(status.regions)}>{empty}</td></tr>'}"
        "</tbody></table>"
    )
    c = status.counts
    summary = (
        f"<p class=summary><strong>{c.total:,} target{'' if c.total == 1 else 's'}:</strong> "
        f"✖ {c.down:,} down · ▲ {c.degraded:,} degraded · ? {c.unknown:,} unknown · "
        f"✔ {c.up:,} up</p>"
    )
    filtered = (
        [f"verdict {', '.join(v for v in VERDICTS if v in query.verdicts)}"]
        if (query.verdicts is not None)
        else []
    )
    if query.region is not None:
        filtered.append(f"reported on by {query.region}")
    if query.search is not None:
        filtered.append(f"name containing “{query.search}”")
    which = f" ({'; '.join(filtered)})" if filtered else ""
    shown = (
        f"<p class=meta>Showing {len(status.targets):,} of {status.matched:,} matching "
        f"targets{escape(which)}, problems first.</p>"
    )
    ready = "" if status.ready else " · <strong>loading retained state</strong>"
    body = (
        "<h1>Vigil</h1>"
        f"<p class=meta>Updated {clock(status.generated_at)} · "
        f"refreshes every {REFRESH_SECONDS} s{ready}</p>{top}{summary}"
        f"{_filters(status, query)}{_search(query)}{shown}{table}{_paging(status, query)}"
        f"<h2>Alerts</h2>{_alerts(alerts)}{bottom}"
    )
    return _page("Vigil status", body)


def query_error_page(message: str) -> str:
    """The status page's answer to a parameter it cannot honour."""
    body = (
        f"<h1>Vigil</h1><p role=alert>Cannot show this listing: {escape(message)}</p>"
        "<p><a href='/'>← all targets</a></p>"
    )
    return _page("Vigil: bad query", body, refresh=False)


def target_page(detail: TargetDetail, why: ExplainResponse, extra: str = "") -> str:
    """One target: the rule's arithmetic, each region's part, and recent results.

    `extra` (uptime, latency chart, incidents) is HTML from `historypage`.
    """
    regions = "".join(
        f"<tr class='{r.counted_as if r.counted_as != 'ok' else 'ok'}'>"
        f"<th>{escape(r.region)}</th><td><span class=state>{r.counted_as.upper()}</span></td>"
        f"<td>{escape(r.reason)}</td><td>{r.consecutive_failures}/{r.failures_needed}</td>"
        f"<td>{r.consecutive_successes}/{r.recoveries_needed}</td>"
        f"<td>{clock(r.failing_since)}</td></tr>"
        for r in why.regions
    )
    history = []
    for region, points in detail.history.items():
        for p in reversed(points):
            css = "ok" if p.outcome == "ok" else "failing"
            history.append(
                f"<tr class={css}><td>{clock(p.started_at)}</td><td>{escape(region)}</td>"
                f"<td>{escape(p.outcome)}</td><td>{p.status_code or '—'}</td>"
                f"<td>{p.duration_ms:.1f} ms</td></tr>"
            )
    body = (
        f"<p><a href='/'>← all targets</a></p><h1>{escape(detail.target)}: "
        f"<span class='{detail.verdict}'>{SYMBOL[detail.verdict]} "
        f"{detail.verdict.upper()}</span></h1><p class=meta>since {clock(detail.since)}; "
        f"alerting: {'yes' if why.alerting else 'no'}</p>"
        f"<h2>Why</h2><ul>{''.join(f'<li>{escape(line)}</li>' for line in why.arithmetic)}</ul>"
        "<table><thead><tr><th>Region</th><th>Counted as</th><th>Because</th>"
        "<th>Failures / needed</th><th>Successes / to recover</th><th>Failing since</th></tr>"
        f"</thead><tbody>{regions}</tbody></table>{extra}"
        "<h2>Recent results</h2><table><thead><tr><th>Started</th><th>Region</th><th>Outcome</th>"
        f"<th>Status</th><th>Latency</th></tr></thead><tbody>{''.join(history)}</tbody></table>"
    )
    return _page(f"Vigil: {detail.target}", body)
