"""The history parts of the page: the outage banner after 15 minutes, maintenance windows."""

from __future__ import annotations

import pytest

from aggregator.core.incidents import Incident
from aggregator.present.historypage import OUTAGE_BANNER_AFTER_S, banners, maintenance
from aggregator.present.historyviews import AnnouncementDoc, WindowDoc, incident_doc
from runtime.clock import rfc3339
from wire.state import Verdict

NOW = 1_790_000_000.0
MIN = 60.0


def outage(open_for: float, peak: Verdict = Verdict.DOWN, target: str = "api") -> Incident:
    return Incident(id=3, target=target, started_at=NOW - open_for, peak=peak)


def test_the_banner_threshold_is_the_runbooks_15_minutes() -> None:
    """The status page's outage banner is due after 15 minutes (the runbook's)."""
    assert OUTAGE_BANNER_AFTER_S == 15 * MIN


@pytest.mark.parametrize(
    ("open_for", "peak", "shown"),
    [
        (14 * MIN, Verdict.DOWN, False),
        (15 * MIN - 1, Verdict.DOWN, False),
        (15 * MIN, Verdict.DOWN, True),
        (15 * MIN + 1, Verdict.DOWN, True),
        (3 * 3600, Verdict.DOWN, True),
        # Degraded: still answering from a quorum of regions, not an outage.
        (3 * 3600, Verdict.DEGRADED, False),
    ],
)
def test_an_outage_gets_a_banner_from_15_minutes(
    open_for: float, peak: Verdict, shown: bool
) -> None:
    """An open outage of 14 minutes has no banner; one of 15 minutes or more has one."""
    html = banners(None, [incident_doc(outage(open_for, peak), NOW)], NOW)
    if not shown:
        assert html == ""
        return
    assert html.count("role=alert") == 1
    assert "<strong>Outage</strong>: api has been down for" in html
    assert f"(since {rfc3339(NOW - open_for)})" in html


def test_the_banner_says_how_long_and_escapes_the_target() -> None:
    """The outage banner names the target (escaped) and its duration so far."""
    html = banners(None, [incident_doc(outage(15 * MIN, target="<b>api"), NOW)], NOW)
    assert "&lt;b&gt;api has been down for 15m 0s" in html
    assert "<b>api" not in html


def test_the_announcement_comes_first_then_each_long_outage() -> None:
    """The operators' banner leads, with its time; every outage past 15 minutes follows."""
    announcement = AnnouncementDoc(text="Investigating <5xx>", at=NOW - 30)
    incidents = [
        incident_doc(outage(20 * MIN, target="api"), NOW),
        incident_doc(outage(14 * MIN, target="web"), NOW),
        incident_doc(outage(16 * MIN, target="db"), NOW),
    ]
    html = banners(announcement, incidents, NOW)
    assert html.index("Announcement") < html.index("api has been") < html.index("db has been")
    assert f"({rfc3339(NOW - 30)}): Investigating &lt;5xx&gt;" in html
    assert "web" not in html


def window(**changes: object) -> WindowDoc:
    doc = {
        "id": 1,
        "target": "api",
        "starts_at": NOW - 600,
        "ends_at": NOW + 1200,
        "reason": "db migration",
        "active": True,
        "silences": {"http://am-1:9093": "s-1", "http://am-2:9093": "s-2"},
        "errors": {},
    }
    return WindowDoc.model_validate(doc | changes)


def rows(html: str) -> list[str]:
    return html.split("<tbody>")[1].split("</tbody>")[0].split("</tr>")[:-1]


def test_no_windows_no_section() -> None:
    """Without maintenance windows the page has no maintenance section at all."""
    assert maintenance([]) == ""


def test_each_window_is_a_row_with_state_times_reason_and_silences() -> None:
    """A window shows its target, state, times, reason and how many peers hold its silence."""
    html = maintenance(
        [
            window(),
            window(
                id=2,
                target="web",
                starts_at=NOW + 3600,
                ends_at=NOW + 7200,
                reason="<upgrade> & reboot",
                active=False,
            ),
        ]
    )
    assert html.startswith("<h2>Maintenance</h2>")
    first, second = rows(html)
    assert first == (
        f"<tr><td>api</td><td>active</td><td>{rfc3339(NOW - 600)}</td>"
        f"<td>{rfc3339(NOW + 1200)}</td><td>db migration</td><td>2 of 2</td>"
    )
    assert "<td>web</td><td>scheduled</td>" in second
    assert f"<td>{rfc3339(NOW + 3600)}</td><td>{rfc3339(NOW + 7200)}</td>" in second
    assert "<td>&lt;upgrade&gt; &amp; reboot</td>" in second


@pytest.mark.parametrize(
    ("silences", "errors", "held"),
    [
        ({"a": "s-1", "b": "s-2"}, {}, "2 of 2"),
        # A peer that refused: listed with no silence id, and its error.
        ({"a": "s-1", "b": None}, {"b": "HTTP 500"}, "1 of 2"),
        # A peer that could not be reached at all: only its error.
        ({"a": "s-1"}, {"b": "connection refused"}, "1 of 2"),
        ({}, {"a": "timeout", "b": "timeout"}, "0 of 2"),
        ({}, {}, "0 of 0"),  # no Alertmanager configured
    ],
)
def test_silences_held_count_every_peer_once(
    silences: dict[str, str | None], errors: dict[str, str], held: str
) -> None:
    """The silenced count is peers holding a silence over every peer asked, failures too."""
    (row,) = rows(maintenance([window(silences=silences, errors=errors)]))
    assert row.endswith(f"<td>{held}</td>")
