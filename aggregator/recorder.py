"""History recording: what the pipeline tells it goes into rollups, incidents and the database.

The pipeline calls a `Recorder`; with no `storage.path` it is `NoHistory` and costs nothing.
`History` owns the pure parts (`Rollups`, `IncidentBook`, the maintenance windows) and the
database edge; every call here only updates memory and queues writes, so ingest never waits
on the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from aggregator.config import StorageConfig
from aggregator.core.incidents import Incident, IncidentBook
from aggregator.core.notices import Announcement, Window
from aggregator.core.rollup import Flushed, Rollups
from aggregator.core.rules import Change, TargetSnapshot, Transition
from aggregator.edges.historydb import (
    HistoryDB,
    Retention,
    StorageError,
)
from aggregator.edges.historyread import announcement, windows
from wire.result import ProbeResult
from wire.state import Verdict

log = logging.getLogger("vigil.aggregator.history")

MAX_ANNOUNCEMENT_CHARS = 500
MAX_NOTE_CHARS = 2000
MAX_REASON_CHARS = 500


@dataclass
class HistoryCounters:
    """Told about write trouble (the metrics wire these to counters)."""

    on_write_error: Callable[[str], None] = lambda _what: None
    on_dropped: Callable[[int], None] = lambda _n: None


class History:
    """Rollups, incidents, maintenance windows and the banner, over one database."""

    def __init__(
        self,
        db: HistoryDB,
        *,
        clock: Callable[[], float] = time.time,
        forget_after: float = 3600.0,
    ) -> None:
        self.db = db
        self._clock = clock
        self._windows: list[Window] = []
        self._next_window = 1
        self.rollups = Rollups(self.maintenance_overlap)
        self.incidents = IncidentBook(in_maintenance=self.in_maintenance)
        self._announcement: Announcement | None = None
        self._next_announcement = 1
        self._forget_after = forget_after
        # Open incidents of targets not held at load: target -> when loaded.
        self._orphans: dict[str, float] = {}
        self._flushing: Iterator[Flushed] | None = None
        # Deploy markers seen since the last tick, written together by it: one write per
        # marker woke the writer thread per result, and its fight for the GIL cost the event
        # loop ~20% of its ingest rate while a backlog drained (3,000 first versions at once).
        self._markers: list[tuple[str, str, float, str]] = []

    @classmethod
    def open(
        cls,
        config: StorageConfig,
        *,
        clock: Callable[[], float] = time.time,
        counters: HistoryCounters | None = None,
        forget_after: float = 3600.0,
    ) -> History:
        """Open the database named in `config` and take back what was open in it.

        Raises:
            StorageError: naming the file and what is wrong with it.
        """
        if config.path is None:
            raise StorageError("storage.path is not set")
        counters = counters or HistoryCounters()
        r = config.retention
        db = HistoryDB(
            config.path,
            Retention(r.minute, r.hour, r.day, r.events),
            max_pending=config.max_pending,
            on_write_error=counters.on_write_error,
            on_dropped=counters.on_dropped,
            clock=clock,
        )
        db.open()
        history = cls(db, clock=clock, forget_after=forget_after)
        try:
            history._load(clock())
        except Exception as exc:  # a file readable as SQLite but not as ours
            db.close()
            raise StorageError(f"{config.path}: cannot read its history: {exc!r}") from None
        return history

    def _load(self, now: float) -> None:
        conn = self.db._conn()
        self.rollups.resume(self.db.load_open_rollups(now), self.db.load_versions())
        next_id, open_incidents = self.db.load_open_incidents()
        self.incidents = IncidentBook(next_id, open_incidents, self.in_maintenance)
        self._windows = windows(conn, now)
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM maintenance").fetchone()[0]
        self._next_window = int(top) + 1
        self._announcement = announcement(conn)
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM announcements").fetchone()[0]
        self._next_announcement = int(top) + 1

    def close(self, timeout: float = 4.0) -> None:
        """Write what is open (so a restart resumes it) and close the file.

        Waits at most `timeout` for the writer (a stop has a budget: what is not written by
        then is lost as if killed, and SQLite rolls the half-written transaction back).
        """
        try:
            self._write_markers()
            for part in self._flushing or ():
                self._write(part)
            self._flushing = None
            for part in self.rollups.final_slices(self._clock()):
                self._write(part)
        finally:
            self.db.close(timeout)

    # -- the pipeline's calls -------------------------------------------------------------

    def observe(self, result: ProbeResult, now: float) -> None:
        """Count one applied result."""
        if self._orphans:
            self._orphans.pop(result.target, None)
        marker = self.rollups.observe(result, now)
        if marker is not None:
            self._markers.append(marker)

    def _write_markers(self) -> None:
        if self._markers:
            markers, self._markers = self._markers, []
            self.db.write_deploys(markers)

    def transitions(self, transitions: list[Transition], now: float) -> None:
        """Follow verdicts (time per verdict) and incidents."""
        for t in transitions:
            if t.kind is Change.VERDICT and t.target is not None:
                self.rollups.verdict(t.target, Verdict(t.new), t.at)
        changed = self.incidents.apply(transitions)
        if changed:
            self.db.write_incidents(changed)

    def loaded(self, targets: Iterable[TargetSnapshot], now: float) -> None:
        """Start counting every target's verdict time; square incidents with the verdicts.

        An open incident of a target the engine does not hold is closed (at its load time)
        if nothing is heard of the target for `forget_after`: the engine would have
        forgotten it by then too.
        """
        targets = list(targets)
        known = {t.name for t in targets}
        self._orphans = {
            i.target: now for i in self.incidents.open_incidents() if i.target not in known
        }
        verdicts: dict[str, tuple[Verdict, float]] = {}
        opened: list[Incident] = []
        for t in targets:
            verdicts[t.name] = (t.verdict, t.since)
            self.rollups.verdict(t.name, t.verdict, now)
        changed = self.incidents.reconcile(verdicts, now)
        for t in targets:
            incident = self.incidents.ensure(t.name, t.verdict, t.since, t.evaluation)
            if incident is not None:
                opened.append(incident)
        self.db.write_incidents([*changed, *opened])

    def tick_slices(self, now: float) -> Iterator[None]:
        """Write the deploy markers seen; close a minute when one has ended, a slice at a time."""
        self._write_markers()
        for target, since in list(self._orphans.items()):
            if now - since >= self._forget_after:
                del self._orphans[target]
                ended = self.incidents.forgotten(target, since)
                if ended is not None:
                    log.info("incident_orphan_closed", extra={"target": target, "id": ended.id})
                    self.db.write_incidents([ended])
        # Kept on the object: a flush abandoned half way (a stop, an error in the tick) is
        # finished by the next tick or by `close`, never lost with the minute it was closing.
        if self._flushing is None:
            self._flushing = self.rollups.flush_slices(now)
        while True:
            try:
                part = next(self._flushing)
            except StopIteration:
                self._flushing = None
                return
            except Exception:
                self._flushing = None
                raise
            self._write(part)
            yield

    def forget(self, target: str) -> None:
        """Stop counting a forgotten target (its history stays until retention)."""
        self.rollups.forget(target)
        ended = self.incidents.forgotten(target, self._clock())
        if ended is not None:
            self.db.write_incidents([ended])

    def _write(self, flushed: Flushed) -> None:
        if flushed.regions or flushed.targets:
            self.db.write_rollups(flushed.regions, flushed.targets)
        self.db.write_deploys(flushed.deploys)

    # -- maintenance windows --------------------------------------------------------------

    def maintenance_overlap(self, target: str, start: float, end: float) -> float:
        """Seconds of [start, end) inside a maintenance window of `target`."""
        spans = sorted(
            (max(w.starts_at, start), min(w.ends_at, end))
            for w in self._windows
            if w.target == target and w.starts_at < end and w.ends_at > start
        )
        covered, reach = 0.0, start
        for a, b in spans:  # overlapping windows count once
            a = max(a, reach)
            if b > a:
                covered += b - a
                reach = b
        return covered

    def in_maintenance(self, target: str, at: float) -> bool:
        """Whether a maintenance window covers `target` at `at`."""
        return any(w.target == target and w.starts_at <= at < w.ends_at for w in self._windows)

    def windows(self, now: float) -> list[Window]:
        """Windows not yet over."""
        self._windows = [w for w in self._windows if w.ends_at > now - 3600.0]
        return [w for w in self._windows if w.ends_at > now]

    def add_window(
        self,
        target: str,
        starts_at: float,
        ends_at: float,
        reason: str,
        silences: dict[str, str | None],
        errors: dict[str, str],
    ) -> Window:
        """Record a maintenance window (its silences already made)."""
        window = Window(
            id=self._next_window,
            target=target,
            starts_at=starts_at,
            ends_at=ends_at,
            reason=reason[:MAX_REASON_CHARS],
            silences=silences,
            errors=errors,
            created_at=self._clock(),
        )
        self._next_window += 1
        self._windows.append(window)
        incident = self.incidents.open_for(target)
        if incident is not None and not incident.maintenance and starts_at <= self._clock():
            incident.maintenance = True
            self.db.write_incidents([incident])
        self.db.write_window(window)
        return window

    def end_window(self, window_id: int, errors: dict[str, str]) -> Window | None:
        """End a window now; its silences were expired by the caller except those in `errors`.

        The expired ones are dropped from the window, the others kept with why, so ending
        it again retries them. None if there is no such window to end.
        """
        now = self._clock()
        for i, w in enumerate(self._windows):
            if w.id == window_id and self._endable(w, now):
                held: dict[str, str | None] = {
                    url: sid for url, sid in w.silences.items() if sid and url in errors
                }
                ended = replace(w, ends_at=min(w.ends_at, max(now, w.starts_at)), silences=held,
                                errors=dict(errors))  # fmt: skip
                self._windows[i] = ended
                self.db.write_window(ended)
                return ended
        return None

    def window(self, window_id: int) -> Window | None:
        """A window that can be ended: not over yet, or still holding a silence somewhere."""
        now = self._clock()
        return next((w for w in self._windows if w.id == window_id and self._endable(w, now)), None)

    @staticmethod
    def _endable(w: Window, now: float) -> bool:
        # Over, but ended early with a peer that could not expire its silence: retry it.
        return w.ends_at > now or any(sid and url in w.errors for url, sid in w.silences.items())

    # -- banner and notes -----------------------------------------------------------------

    @property
    def announcement(self) -> Announcement | None:
        """The banner in force."""
        return self._announcement

    def announce(self, text: str) -> Announcement:
        """Set the banner."""
        self._announcement = Announcement(text[:MAX_ANNOUNCEMENT_CHARS], self._clock())
        self.db.write_announcement(self._next_announcement, self._announcement)
        self._next_announcement += 1
        return self._announcement

    def clear_announcement(self) -> None:
        """Take the banner down."""
        self._announcement = None
        self.db.clear_announcements(self._clock())

    def note(self, incident: Incident, text: str) -> Incident:
        """Attach a note to an incident (the open one in memory too, so it is kept)."""
        note = text[:MAX_NOTE_CHARS]
        held = self.incidents.open_for(incident.target)
        if held is not None and held.id == incident.id:
            held.note = note  # later writes of the open incident carry it
            incident = held
        else:
            incident = replace(incident, note=note)
        # Only the note: a row read before a queued close must not reopen the incident.
        self.db.write_note(incident.id, note)
        return incident
