"""The history parts of the pages, and the public page.

Banner, maintenance, uptime, charts, incidents. Pure: response models in, HTML out (no
script, charts as inline SVG).

The public page (`api.public_page`) shows verdicts, uptime, incidents and the banner, and
nothing internal: no error texts, versions, regions' details or alert labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from aggregator.core.uptime import BURN_SEV1, BURN_SEV2
from aggregator.present import charts
from aggregator.present.historyviews import (
    AnnouncementDoc,
    IncidentDoc,
    LatencyResponse,
    UptimeListResponse,
    UptimeResponse,
    WindowDoc,
)
from aggregator.present.page import SYMBOL, _page, clock
from runtime.clock import rfc3339

# An open outage older than this puts a banner on the page by itself.
OUTAGE_BANNER_AFTER_S = 15 * 60
INCIDENTS_SHOWN = 20


def _pct(availability: float | None) -> str:
    return "no data" if availability is None else charts.percent(availability)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def banners(
    announcement: AnnouncementDoc | None, open_outages: Sequence[IncidentDoc], now: float
) -> str:
    """The operators' banner, then one for each outage open longer than 15 minutes."""
    parts = []
    if announcement is not None:
        parts.append(
            f"<div class=banner role=status><strong>Announcement</strong> "
            f"({escape(rfc3339(announcement.at))}): {escape(announcement.text)}</div>"
        )
    for i in open_outages:
        if i.peak == "down" and now - i.started_at >= OUTAGE_BANNER_AFTER_S:
            parts.append(
                f'<div class="banner outage" role=alert><strong>Outage</strong>: '
                f"{escape(i.target)} has been down for {_duration(now - i.started_at)} "
                f"(since {escape(rfc3339(i.started_at))}).</div>"
            )
    return "".join(parts)


def maintenance(windows: Sequence[WindowDoc]) -> str:
    """Maintenance windows now and coming."""
    if not windows:
        return ""
    rows = "".join(
        f"<tr><td>{escape(w.target)}</td><td>{'active' if w.active else 'scheduled'}</td>"
        f"<td>{escape(rfc3339(w.starts_at))}</td><td>{escape(rfc3339(w.ends_at))}</td>"
        f"<td>{escape(w.reason)}</td>"
        f"<td>{sum(1 for s in w.silences.values() if s)} of "
        f"{len(w.silences) + len(set(w.errors) - set(w.silences))}</td></tr>"
        for w in windows
    )
    return (
        "<h2>Maintenance</h2><table><thead><tr><th>Target</th><th>State</th><th>From</th>"
        "<th>Until</th><th>Reason</th><th>Alertmanagers silenced</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _burn(value: float | None, threshold: float, window: str) -> str:
    if value is None:
        return f"{window}: no data"
    mark = " ▲ over" if value >= threshold else ""
    return f"{window}: {value:.2f}x (threshold {threshold:g}x{mark})"


def uptime_section(u: UptimeResponse) -> str:
    """Availability per window and region, the budget, burn rates and the 90-day bar."""
    regions = sorted({r for w in u.windows for r in w.regions})
    head = "".join(f"<th>{escape(r)}</th>" for r in regions)
    rows = "".join(
        f"<tr><th>{escape(w.window)}</th><td>{_pct(w.availability)}</td>"
        f"<td>{_duration(w.down_s)}</td><td>{_duration(w.maintenance_s)}</td>"
        f"<td>{_duration(w.unknown_s)}</td>"
        + "".join(f"<td>{_pct(w.regions.get(r))}</td>" for r in regions)
        + "</tr>"
        for w in u.windows
    )
    budget = "no data" if u.budget_left is None else f"{u.budget_left * 100:.1f}% left"
    severity = f" · <strong>{escape(u.severity)}</strong>" if u.severity else ""
    days = [(d.day, d.availability) for d in u.daily]
    return (
        f"<h2>Uptime</h2><p class=meta>Objective {u.slo * 100:g}% over "
        f"{u.slo_window_s / 86400:g} days: {_pct(u.availability_slo_window)}, error budget "
        f"{budget}. Burn rate {_burn(u.burn_rate_5m, BURN_SEV1, '5 min')}; "
        f"{_burn(u.burn_rate_1h, BURN_SEV2, '1 h')}{severity}. Unknown time (no fresh "
        "evidence) and maintenance are left out of the arithmetic.</p>"
        "<table><thead><tr><th>Window</th><th>Available</th><th>Down</th><th>Maintenance</th>"
        f"<th>Unknown</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
        f"{charts.uptime_bar(days)}"
    )


def latency_section(lat: LatencyResponse) -> str:
    """p50 and p95 per region with the budget lines, and the deploys seen."""
    series = {
        region: [(p.bucket, p.p50_ms, p.p95_ms) for p in points]
        for region, points in sorted(lat.regions.items())
    }
    chart = charts.latency_chart(
        series,
        start=lat.start,
        end=lat.end,
        budgets_ms=lat.budgets_ms,
        title=f"Latency of successful checks, last {round((lat.end - lat.start) / 3600)} h",
    )
    deploys = "".join(
        f"<li>{escape(rfc3339(d.at))}: {escape(d.region)} saw {escape(d.version)}</li>"
        for d in lat.deploys[-20:]
    )
    return f"<h2>Latency</h2>{chart}" + (
        f"<h3>Deploys (version changes)</h3><ul>{deploys}</ul>" if deploys else ""
    )


def incidents_table(incidents: Sequence[IncidentDoc], *, public: bool = False) -> str:
    """Incidents newest first; the public form has no error texts or versions."""
    if not incidents:
        return "<p>No incidents recorded.</p>"
    rows = []
    for i in incidents[:INCIDENTS_SHOWN]:
        state = "open" if i.open else "resolved"
        cells = (
            f"<td>{'' if public else i.id}</td><td>{escape(i.target)}</td>"
            f"<td class={i.peak}>{SYMBOL.get(i.peak, '?')} {i.peak.upper()}</td>"
            f"<td>{escape(rfc3339(i.started_at))}</td><td>{_duration(i.duration_s)} "
            f"({state})</td>"
        )
        if public:
            rows.append(f"<tr>{cells}</tr>")
            continue
        regions = "; ".join(
            f"{r.region} from {clock(r.first_failure_at)}: {r.first_error or '—'}"
            for r in i.regions
        )
        versions = f"{i.version_at_start or '—'} → {i.version_at_end or '—'}"
        note = (" · note: " + i.note) if i.note else ""
        maint = " · during maintenance" if i.maintenance else ""
        rows.append(
            f'<tr data-incident="{i.id}">{cells}<td>{escape(regions)}</td>'
            f"<td>{escape(versions)}</td><td>{escape(maint + note)}</td></tr>"
        )
    extra = (
        ""
        if public
        else "<th>Regions (first failure: first error)</th><th>Version</th><th>Notes</th>"
    )
    first = "" if public else "Id"
    return (
        f"<table><thead><tr><th>{first}</th><th>Target</th><th>Peak</th><th>Started</th>"
        f"<th>Duration</th>{extra}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def public_page(
    verdicts: Sequence[tuple[str, str]],
    uptime: UptimeListResponse | None,
    incidents: Sequence[IncidentDoc],
    announcement: AnnouncementDoc | None,
    now: float,
) -> str:
    """The customers' page: each target's verdict and uptime, incidents, the banner."""
    by_target = {u.target: u for u in (uptime.targets if uptime is not None else [])}
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td class='verdict {v}'><span class=state>"
        f"{SYMBOL.get(v, '?')} {v.upper()}</span></td>"
        f"<td>{_pct(by_target[name].availability_24h if name in by_target else None)}</td>"
        f"<td>{_pct(by_target[name].availability_30d if name in by_target else None)}</td></tr>"
        for name, v in verdicts
    )
    open_outages = [i for i in incidents if i.open]
    body = (
        f"<h1>Service status</h1>{banners(announcement, open_outages, now)}"
        f"<p class=meta>Updated {clock(now)}</p>"
        "<table><thead><tr><th>Service</th><th>Status</th><th>Uptime 24 h</th>"
        f"<th>Uptime 30 d</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<h2>Incidents</h2>{incidents_table(incidents, public=True)}"
    )
    return _page("Service status", body)


def target_link(name: str) -> str:
    """The operator page of one target."""
    return f"/targets/{quote(name)}"
