"""The incident book: transitions in, incidents opened, widened and closed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from aggregator.core.incidents import Incident, IncidentBook
from aggregator.core.rules import Change, Evaluation, RegionEvidence, Transition
from wire.state import Verdict

REGIONS = ("us-east", "eu-west", "ap-southeast")
T0 = 1_790_000_000.0


@dataclass(frozen=True)
class Step:
    """One verdict transition at T0 + `at`, with the regions failing (since T0 + offset)."""

    verdict: Verdict
    at: float
    failing: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    kind: Change = Change.VERDICT


def evaluation(step: Step) -> Evaluation:
    evidence = tuple(
        RegionEvidence(
            region=r,
            failing=r in step.failing,
            stale=False,
            stale_reason=None,
            consecutive_failures=3 if r in step.failing else 0,
            consecutive_successes=0 if r in step.failing else 2,
            failing_since=T0 + step.failing[r] if r in step.failing else None,
            status_code=503 if r in step.failing else 200,
            error_kind="http_status" if r in step.failing else None,
            error=f"{r} says 503" if r in step.failing else None,
            version=step.versions.get(r),
            last_result_at=T0 + step.at,
        )
        for r in REGIONS
    )
    return Evaluation(
        verdict=step.verdict,
        quorum_degraded=False,
        failing=frozenset(step.failing),
        fresh=frozenset(REGIONS),
        stale=frozenset(),
        regions=evidence,
        versions=step.versions,
        required=3,
        min_regions=2,
    )


def transitions(steps: list[Step], target: str = "api") -> list[Transition]:
    out = []
    old = Verdict.UP
    for s in steps:
        new = s.verdict.value if s.kind is Change.VERDICT else "failing"
        out.append(
            Transition(s.kind, target, None, old.value, new, T0 + s.at, T0 + s.at, evaluation(s))
        )
        if s.kind is Change.VERDICT:
            old = s.verdict
    return out


def play(book: IncidentBook, steps: list[Step], target: str = "api") -> list[Incident]:
    """Apply each step on its own (as the pipeline does); every incident reported, by id."""
    seen: dict[int, Incident] = {}
    for t in transitions(steps, target):
        for i in book.apply([t]):
            seen[i.id] = i
    return sorted(seen.values(), key=lambda i: i.id)


D = Verdict.DOWN
G = Verdict.DEGRADED
U = Verdict.UP
X = Verdict.UNKNOWN
ALL = dict.fromkeys(REGIONS, 0.0)


@pytest.mark.parametrize(
    ("steps", "want"),
    [
        pytest.param(
            [Step(G, 10, {"us-east": 0}), Step(D, 30, ALL), Step(U, 100)],
            [(10, 100, "down")],
            id="up-degraded-down-up-is-one-incident-peak-down",
        ),
        pytest.param(
            [Step(D, 10, ALL), Step(G, 50, {"us-east": 0}), Step(U, 70)],
            [(10, 70, "down")],
            id="peak-stays-down-when-it-eases-to-degraded",
        ),
        pytest.param(
            [Step(G, 10, {"us-east": 0}), Step(U, 20)],
            [(10, 20, "degraded")],
            id="degraded-only",
        ),
        pytest.param(
            [Step(D, 10, ALL), Step(X, 40), Step(D, 60, ALL), Step(U, 90)],
            [(10, 90, "down")],
            id="unknown-in-the-middle-keeps-it-open",
        ),
        pytest.param(
            [Step(D, 10, ALL), Step(X, 40)],
            [(10, None, "down")],
            id="unknown-does-not-close",
        ),
        pytest.param(
            [Step(X, 10), Step(U, 20)],
            [],
            id="unknown-opens-nothing",
        ),
        pytest.param(
            [Step(D, 10, ALL), Step(U, 20), Step(G, 30, {"eu-west": 25}), Step(U, 40)],
            [(10, 20, "down"), (30, 40, "degraded")],
            id="two-outages-two-incidents",
        ),
    ],
)
def test_transitions_make_incidents(
    steps: list[Step], want: list[tuple[float, float | None, str]]
) -> None:
    """Verdict transitions open, escalate and close incidents as the table says."""
    book = IncidentBook()
    got = play(book, steps)
    assert [
        (i.started_at - T0, None if i.ended_at is None else i.ended_at - T0, i.peak.value)
        for i in got
    ] == want
    open_now = [i for i in got if i.open]
    assert book.open_incidents() == open_now


def test_regions_joining_later_keep_their_own_first_failure_and_error() -> None:
    """A region that fails later is added with its own start and error; earlier ones are kept."""
    book = IncidentBook()
    play(
        book,
        [
            Step(G, 10, {"us-east": 2}),
            Step(G, 30, {"us-east": 2, "eu-west": 25}, kind=Change.REGION),
            Step(D, 50, {"us-east": 2, "eu-west": 25, "ap-southeast": 48}),
            # Already involved: a later failure time does not move its start.
            Step(D, 60, {"us-east": 59, "eu-west": 25, "ap-southeast": 48}, kind=Change.REGION),
        ],
    )
    incident = book.open_for("api")
    assert incident is not None
    assert {r: (v.first_failure_at - T0, v.first_error) for r, v in incident.regions.items()} == {
        "us-east": (2, "http_status: HTTP 503: us-east says 503"),
        "eu-west": (25, "http_status: HTTP 503: eu-west says 503"),
        "ap-southeast": (48, "http_status: HTTP 503: ap-southeast says 503"),
    }
    assert incident.started_at == T0 + 10
    assert incident.peak is Verdict.DOWN


def test_versions_at_onset_and_recovery() -> None:
    """An incident keeps the versions of its onset and of its recovery."""
    book = IncidentBook()
    (incident,) = play(
        book,
        [
            Step(D, 10, ALL, versions=dict.fromkeys(REGIONS, "1.0")),
            Step(U, 90, versions=dict.fromkeys(REGIONS, "1.1")),
        ],
    )
    assert incident.versions_start == dict.fromkeys(REGIONS, "1.0")
    assert incident.versions_end == dict.fromkeys(REGIONS, "1.1")


def test_ids_increase_from_next_id() -> None:
    """Incidents take ids from `next_id` on, one each, across targets."""
    book = IncidentBook(next_id=41)
    a = play(book, [Step(D, 10, ALL)], target="a")
    b = play(book, [Step(G, 11, {"us-east": 0})], target="b")
    c = play(book, [Step(U, 20), Step(D, 30, ALL)], target="a")
    assert [i.id for i in a + b + c] == [41, 42, 41, 43]
    assert a[0].ended_at == T0 + 20


@pytest.mark.parametrize(
    ("verdicts", "closed"),
    [
        ({"a": (U, T0 + 50), "b": (D, T0 + 5), "c": (X, T0 + 40)}, {"a": T0 + 50}),
        ({}, {}),
        # Recovery dated before the incident began: it ends where it began.
        ({"a": (U, T0 - 100)}, {"a": T0 + 10}),
        ({"a": (G, T0 + 60), "b": (U, T0 + 70)}, {"b": T0 + 70}),
    ],
)
def test_reconcile_closes_only_incidents_of_targets_now_up(
    verdicts: dict[str, tuple[Verdict, float]], closed: dict[str, float]
) -> None:
    """After a restart only targets now `up` have their incident closed, dated their `since`."""
    stored = [
        Incident(id=n, target=t, started_at=T0 + 10, peak=Verdict.DOWN)
        for n, t in enumerate("abc", start=1)
    ]
    book = IncidentBook(4, stored)
    got = book.reconcile(verdicts, T0 + 100)
    assert {i.target: i.ended_at for i in got} == closed
    assert sorted(i.target for i in book.open_incidents()) == sorted(set("abc") - set(closed))


def test_forgotten_closes_the_incident_now() -> None:
    """A forgotten target's incident ends at that time; a target without one gives None."""
    book = IncidentBook()
    play(book, [Step(D, 10, ALL)])
    ended = book.forgotten("api", T0 + 3600)
    assert ended is not None
    assert ended.ended_at == T0 + 3600
    assert book.open_for("api") is None
    assert book.forgotten("api", T0 + 3700) is None
    assert book.forgotten("never", T0 + 3700) is None


def test_ensure_opens_only_a_missing_incident() -> None:
    """After a restart a failing target lacking an incident gets one; others do not."""
    book = IncidentBook(next_id=7)
    ev = evaluation(Step(D, 0, ALL))
    opened = book.ensure("api", Verdict.DOWN, T0 + 5, ev)
    assert opened is not None
    assert (opened.id, opened.started_at) == (7, T0 + 5)
    assert book.ensure("api", Verdict.DOWN, T0 + 6, ev) is None
    assert book.ensure("web", Verdict.UP, T0 + 6, ev) is None
    assert book.ensure("web", Verdict.DOWN, T0 + 6, None) is None


def test_maintenance_marks_incidents_that_start_or_end_in_a_window() -> None:
    """An incident that starts (or ends) inside a window is marked maintenance."""
    window = (T0 + 100, T0 + 200)
    book = IncidentBook(in_maintenance=lambda _t, at: window[0] <= at < window[1])
    (inside,) = play(book, [Step(D, 150, ALL), Step(U, 300)], target="a")
    (ends_in,) = play(book, [Step(D, 50, ALL), Step(U, 120)], target="b")
    (outside,) = play(book, [Step(D, 10, ALL), Step(U, 20)], target="c")
    assert (inside.maintenance, ends_in.maintenance, outside.maintenance) == (True, True, False)


OLD = dict.fromkeys(REGIONS, "3.8.34")
NEW = dict.fromkeys(REGIONS, "3.8.35")


@pytest.mark.parametrize(
    ("steps", "want"),
    [
        pytest.param([Step(D, 10, ALL, OLD)], OLD, id="the-onset-versions"),
        pytest.param(
            [Step(D, 10, ALL, OLD), Step(D, 20, ALL, NEW, kind=Change.REGION)],
            NEW,
            id="a-deploy-seen-while-open",
        ),
        pytest.param(
            [Step(D, 10, ALL, OLD), Step(X, 20), Step(D, 30, ALL, NEW)],
            NEW,
            id="seen-on-a-verdict-change",
        ),
        pytest.param(
            [Step(D, 10, ALL, OLD), Step(X, 20)],
            OLD,
            id="an-evaluation-without-versions-forgets-none",
        ),
        pytest.param([Step(D, 10, ALL)], {}, id="none-ever-seen"),
    ],
)
def test_forgotten_ends_with_the_last_versions_seen(
    steps: list[Step], want: dict[str, str]
) -> None:
    """A forgotten target's incident ends with the versions last seen while it was open."""
    book = IncidentBook()
    play(book, steps)
    ended = book.forgotten("api", T0 + 3600)
    assert ended is not None
    assert ended.versions_end == want


def test_reconcile_ends_with_the_last_versions_known() -> None:
    """Up again across a restart: the stored onset versions, or newer ones seen since load."""
    stored = [
        Incident(id=1, target="a", started_at=T0 + 10, peak=D, versions_start=OLD),
        Incident(id=2, target="b", started_at=T0 + 10, peak=D, versions_start=OLD),
        Incident(id=3, target="c", started_at=T0 + 10, peak=D),
    ]
    book = IncidentBook(4, stored)
    play(book, [Step(D, 20, ALL, NEW, kind=Change.REGION)], target="b")
    got = book.reconcile(dict.fromkeys("abc", (U, T0 + 50)), T0 + 100)
    assert {i.target: i.versions_end for i in got} == {"a": OLD, "b": NEW, "c": {}}
    # The onset's versions are the onset's still.
    assert [i.versions_start for i in got] == [OLD, OLD, {}]


def test_the_next_incident_starts_from_its_own_versions() -> None:
    """Versions seen in one incident never become the end versions of the next one."""
    book = IncidentBook()
    play(book, [Step(D, 10, ALL, OLD), Step(U, 20, {}, NEW), Step(D, 30, ALL)])
    ended = book.forgotten("api", T0 + 3600)
    assert ended is not None
    assert ended.versions_end == {}
