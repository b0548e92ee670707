"""Incidents: a target's time away from `up`, and what the regions said about it. Pure.

An incident opens when a target's verdict becomes degraded or down and none is open for it,
and closes when the verdict is `up` again (`unknown` in between changes nothing: no evidence
either way). It keeps its peak verdict, each region that failed with the time its failures
began and its first error, and the versions the regions ran at onset and at recovery. An
incident closed without a recovering evaluation (up again across a restart, or its target
forgotten) ends with the last versions the book saw while it was open.
`edges/historydb.py` stores them; ids are given here, so no write waits on the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aggregator.core.rules import Change, Evaluation, Transition
from wire.state import Verdict

# Worst first: the peak of an incident is the worst verdict it reached.
_SEVERITY = {Verdict.DOWN: 2, Verdict.DEGRADED: 1}
_OPENS = frozenset({Verdict.DOWN, Verdict.DEGRADED})
MAX_ERROR_CHARS = 300


@dataclass(slots=True)
class RegionInvolvement:
    """One region's part in an incident."""

    first_failure_at: float
    first_error: str | None

    def to_doc(self) -> dict[str, Any]:
        """As stored and served."""
        return {"first_failure_at": self.first_failure_at, "first_error": self.first_error}


@dataclass(slots=True)
class Incident:
    """One incident of one target."""

    id: int
    target: str
    started_at: float
    peak: Verdict
    ended_at: float | None = None
    regions: dict[str, RegionInvolvement] = field(default_factory=dict)
    # Region -> version the region's probe saw, at onset and at recovery.
    versions_start: dict[str, str] = field(default_factory=dict)
    versions_end: dict[str, str] = field(default_factory=dict)
    maintenance: bool = False
    note: str | None = None

    @property
    def open(self) -> bool:
        """Whether the target has not recovered yet."""
        return self.ended_at is None

    def duration(self, now: float) -> float:
        """Seconds from start to end (or to `now` while open)."""
        return (self.ended_at if self.ended_at is not None else now) - self.started_at


def _error(ev_region: Any) -> str | None:
    kind, text, status = ev_region.error_kind, ev_region.error, ev_region.status_code
    if kind is None and text is None:
        return None
    parts = [str(kind) if kind else "error"]
    if status is not None:
        parts.append(f"HTTP {status}")
    if text:
        parts.append(str(text))
    return ": ".join(parts)[:MAX_ERROR_CHARS]


def _involve(incident: Incident, ev: Evaluation, now: float) -> bool:
    changed = False
    for r in ev.regions:
        if not r.failing or r.region in incident.regions:
            continue
        began = r.failing_since if r.failing_since is not None else now
        incident.regions[r.region] = RegionInvolvement(began, _error(r))
        changed = True
    return changed


# In maintenance at this time? (target, epoch seconds)
InMaintenance = Callable[[str, float], bool]


class IncidentBook:
    """The open incident of each target, and the id of the next one."""

    def __init__(
        self,
        next_id: int = 1,
        open_incidents: Iterable[Incident] = (),
        in_maintenance: InMaintenance = lambda _t, _at: False,
    ) -> None:
        self._next_id = next_id
        self._open: dict[str, Incident] = {i.target: i for i in open_incidents if i.open}
        self._in_maintenance = in_maintenance
        # Target -> the versions last seen while its incident is open: its versions at the end
        # when it closes with no evaluation of its own. Restored incidents start from onset's.
        self._last_versions: dict[str, dict[str, str]] = {
            t: dict(i.versions_start) for t, i in self._open.items()
        }

    def open_for(self, target: str) -> Incident | None:
        """The target's open incident, if any."""
        return self._open.get(target)

    def open_incidents(self) -> list[Incident]:
        """Every open incident."""
        return list(self._open.values())

    def apply(self, transitions: Iterable[Transition]) -> list[Incident]:
        """Fold transitions in; returns each incident opened, changed or closed (once)."""
        changed: dict[int, Incident] = {}
        for t in transitions:
            if t.target is None or t.evaluation is None:
                continue
            incident = self._open.get(t.target)
            if incident is not None and t.evaluation.versions:
                self._last_versions[t.target] = dict(t.evaluation.versions)
            if t.kind is Change.VERDICT:
                new = Verdict(t.new)
                if incident is None and new in _OPENS:
                    incident = self._start(t.target, new, t.since, t.evaluation)
                elif incident is not None and new is Verdict.UP:
                    self._end(incident, t.since, t.evaluation)
                elif incident is not None and new in _OPENS:
                    if _SEVERITY[new] > _SEVERITY[incident.peak]:
                        incident.peak = new
                    _involve(incident, t.evaluation, t.at)
                else:
                    continue
                changed[incident.id] = incident
            elif (
                incident is not None
                and t.kind in (Change.REGION, Change.QUORUM)
                and _involve(incident, t.evaluation, t.at)
            ):
                changed[incident.id] = incident
        return list(changed.values())

    def reconcile(
        self, verdicts: Mapping[str, tuple[Verdict, float]], now: float
    ) -> list[Incident]:
        """After a restart: close the open incidents whose target is up again.

        `verdicts` is target -> (verdict, since) as restored. A target not known (yet) or
        `unknown` keeps its incident open: no evidence that it recovered.
        """
        out = []
        for target, incident in list(self._open.items()):
            held = verdicts.get(target)
            if held is not None and held[0] is Verdict.UP:
                self._close(incident, max(held[1], incident.started_at), self._last(target))
                out.append(incident)
        return out

    def forgotten(self, target: str, now: float) -> Incident | None:
        """The engine forgot the target (silent for `forget_after`): its incident ends now."""
        incident = self._open.get(target)
        if incident is not None:
            self._close(incident, now, self._last(target))
        return incident

    def ensure(
        self, target: str, verdict: Verdict, since: float, ev: Evaluation | None
    ) -> Incident | None:
        """After a restart: open the incident a down or degraded target lacks.

        (The file was new or lost.) Returns it, or None when there was one or the target is
        not failing.
        """
        if verdict not in _OPENS or target in self._open or ev is None:
            return None
        return self._start(target, verdict, since, ev)

    def _start(self, target: str, verdict: Verdict, at: float, ev: Evaluation) -> Incident:
        incident = Incident(
            id=self._next_id,
            target=target,
            started_at=at,
            peak=verdict,
            versions_start=dict(ev.versions),
            maintenance=self._in_maintenance(target, at),
        )
        self._next_id += 1
        self._last_versions[target] = dict(ev.versions)
        # Started when the verdict changed (dated from results, as the alert's startsAt);
        # each region's own first failure, often earlier, is kept with it.
        _involve(incident, ev, at)
        self._open[target] = incident
        return incident

    def _last(self, target: str) -> dict[str, str]:
        return dict(self._last_versions.get(target, {}))

    def _end(self, incident: Incident, at: float, ev: Evaluation) -> None:
        self._close(incident, at, dict(ev.versions))

    def _close(self, incident: Incident, at: float, versions: dict[str, str]) -> None:
        incident.ended_at = max(at, incident.started_at)
        incident.versions_end = versions
        if not incident.maintenance and self._in_maintenance(incident.target, at):
            incident.maintenance = True
        self._open.pop(incident.target, None)
        self._last_versions.pop(incident.target, None)
