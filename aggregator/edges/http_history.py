"""HTTP handlers of the history features.

Incidents, uptime, latency, badges, banner, notes and maintenance windows. Thin: parse, ask
`present/historyviews.py` or `History`, answer.

With no `storage.path` the history routes answer 404 saying so; the status badge still works
(it reads the live verdict). The uptime badge answers for a target with a live verdict or a
history in the file, 404 for one with neither.
"""

from __future__ import annotations

import datetime
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from html import escape
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from aggregator.config import SloConfig
from aggregator.core.incidents import Incident
from aggregator.edges import historyapi as api
from aggregator.edges.historydb import StorageError
from aggregator.edges.historyread import incident as read_incident
from aggregator.present import charts, historypage
from aggregator.present import historyviews as hv
from aggregator.recorder import (
    MAX_ANNOUNCEMENT_CHARS,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    History,
)
from wire.result import Name

M = TypeVar("M", bound=BaseModel)

# Longest maintenance window one request may make.
MAX_WINDOW_S = 7 * 86400.0
BADGE_MAX_AGE = 60
PUBLIC_MAX_AGE = 10
# Answers kept for anyone who asks (badges per target and window, /public): a bound.
MAX_CACHED = 10_000

# (target, starts_at, ends_at, reason) -> (peer url -> silence id or None, peer url -> error)
MakeSilences = Callable[
    [str, float, float, str], Awaitable[tuple[dict[str, str | None], dict[str, str]]]
]
# (peer url -> silence id) -> peer url -> error, for the peers that could not expire theirs
ExpireSilences = Callable[[dict[str, str | None]], Awaitable[dict[str, str]]]


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextIn(_In):
    """A banner's text."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ANNOUNCEMENT_CHARS)]


class NoteIn(_In):
    """An incident's note."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NOTE_CHARS)]


class MaintenanceIn(_In):
    """A maintenance window to open now."""

    target: Name
    duration_s: Annotated[float, Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON_CHARS)]


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refuse_changes() -> web.Response:
    return _error(
        403,
        "changes need an API token: set VIGIL_API_TOKENS or api.tokens_file (without one, "
        "only an aggregator listening on a loopback address accepts them)",
    )


def _off() -> web.Response:
    return _error(404, "history is off: set storage.path in the aggregator's config")


MAX_ID = 2**63 - 1


def parse_id(text: str) -> int:
    """An incident id: a positive integer SQLite can hold.

    Raises:
        ValueError: anything else.
    """
    value = int(text)
    if not 1 <= value <= MAX_ID:
        raise ValueError(f"an id is 1..{MAX_ID}")
    return value


def parse_time(text: str) -> float:
    """Epoch seconds, or an RFC 3339 / ISO 8601 time (UTC when no offset is given).

    Raises:
        ValueError: neither.
    """
    try:
        value = float(text)
    except ValueError:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        value = moment.timestamp()
    if not math.isfinite(value) or value < 0:
        raise ValueError("not a time")
    return value


async def _body(request: web.Request, model: type[M]) -> M | web.Response:
    try:
        raw = await request.read()
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return _error(400, f"{where}: {first['msg']}")


class HistoryRoutes:
    """The handlers, over one `History` (or none) and what they need besides."""

    def __init__(
        self,
        history: History | None,
        *,
        slo: SloConfig,
        clock: Callable[[], float],
        verdict_of: Callable[[str], str | None],
        verdicts: Callable[[], list[tuple[str, str]]] = list,
        make_silences: MakeSilences | None = None,
        expire_silences: ExpireSilences | None = None,
        changes_allowed: bool = True,
        regions: Sequence[str] = (),
    ) -> None:
        self._history = history
        self._slo = slo
        self._clock = clock
        self._verdict_of = verdict_of
        self._verdicts = verdicts
        self._make_silences = make_silences
        self._expire_silences = expire_silences
        self._answers: OrderedDict[str, tuple[float, str]] = OrderedDict()
        # Banners, notes and maintenance (which silences pages) need a token, or an
        # aggregator only this machine can reach: never open to whoever reaches the port.
        self._changes_allowed = changes_allowed
        self._regions = tuple(regions)

    def _opened(self, target: str) -> api.OpenBuckets:
        rollups = self._history.rollups if self._history is not None else None
        return api.OpenBuckets.of(rollups, target, self._regions)

    def add_to(self, app: web.Application) -> None:
        """Register every route."""
        r = app.router
        r.add_get("/api/v1/incidents", self.incidents)
        r.add_get("/api/v1/incidents/{id}", self.incident)
        r.add_post("/api/v1/incidents/{id}/note", self.note)
        r.add_get("/api/v1/targets/{target}/incidents", self.incidents)
        r.add_get("/api/v1/targets/{target}/uptime", self.uptime)
        r.add_get("/api/v1/targets/{target}/latency", self.latency)
        r.add_get("/api/v1/uptime", self.uptime_list)
        r.add_get("/api/v1/announcements", self.announcement)
        r.add_post("/api/v1/announcements", self.announce)
        r.add_delete("/api/v1/announcements", self.clear)
        r.add_get("/api/v1/maintenance", self.windows)
        r.add_post("/api/v1/maintenance", self.maintenance)
        r.add_delete("/api/v1/maintenance/{id}", self.end_maintenance)
        r.add_get("/badge/{target}/status.svg", self.status_badge)
        r.add_get("/badge/{target}/uptime.svg", self.uptime_badge)
        r.add_get("/public", self.public)

    # -- parts of the operator pages ------------------------------------------------------

    def page_top(self) -> str:
        """Banners for the status page: the announcement, and outages open over 15 minutes."""
        if self._history is None:
            return ""
        now = self._clock()
        held = self._history.announcement
        doc = None if held is None else hv.AnnouncementDoc(text=held.text, at=held.at)
        outages = [hv.incident_doc(i, now) for i in self._history.incidents.open_incidents()]
        return historypage.banners(doc, outages, now)

    def page_bottom(self) -> str:
        """The maintenance windows for the status page."""
        if self._history is None:
            return ""
        now = self._clock()
        return historypage.maintenance([hv.window_doc(w, now) for w in self._history.windows(now)])

    async def target_extra(self, name: str) -> str:
        """Uptime, latency chart and incidents for one target's page."""
        if self._history is None:
            return ""
        now = self._clock()
        db = self._history.db
        try:
            opened = self._opened(name)
            uptime = await api.uptime_view(db, name, now, self._slo, opened)
            budgets = list(self._slo.latency_budgets_ms)
            latency = await api.latency_view(db, name, now, 24, budgets, opened)
            incidents = await api.incidents_view(db, now, target=name, limit=20)
        except StorageError as exc:
            return f"<p role=alert>History unavailable: {escape(str(exc))}</p>"
        return (
            historypage.banners(None, [i for i in incidents.incidents if i.open], now)
            + historypage.uptime_section(uptime)
            + historypage.latency_section(latency)
            + "<h2>Incidents</h2>"
            + historypage.incidents_table(incidents.incidents)
        )

    async def public(self, _request: web.Request) -> web.Response:
        """The customers' page: verdicts, uptime, incidents and banner; nothing internal.

        Built at most every `PUBLIC_MAX_AGE` seconds: anyone may ask for it, often.
        """
        cached = self._cached("public")
        if cached is not None:
            return web.Response(text=cached, content_type="text/html")
        now = self._clock()
        uptime = None
        incidents: list[hv.IncidentDoc] = []
        announcement = None
        if self._history is not None:
            held = self._history.announcement
            if held is not None:
                announcement = hv.AnnouncementDoc(text=held.text, at=held.at)
            try:
                uptime = await api.uptime_list_view(
                    self._history.db, now, self._slo, self._history.rollups
                )
                incidents = (await api.incidents_view(self._history.db, now, limit=20)).incidents
            except StorageError:
                uptime = None  # the verdicts still show
        html = historypage.public_page(self._verdicts(), uptime, incidents, announcement, now)
        self._cache("public", html, PUBLIC_MAX_AGE)
        return web.Response(text=html, content_type="text/html")

    async def incidents(self, request: web.Request) -> web.Response:
        """Incidents newest first: `?target=&since=&before=&limit=`."""
        if self._history is None:
            return _off()
        query = request.query
        try:
            since = parse_time(query["since"]) if "since" in query else None
            before = parse_id(query["before"]) if "before" in query else None
            limit = int(query.get("limit", "100"))
            if not 1 <= limit <= 500:
                raise ValueError("limit must be 1..500")
        except (ValueError, OverflowError) as exc:
            return _error(400, f"bad query: {exc}")
        target = request.match_info.get("target") or query.get("target")
        try:
            view = await api.incidents_view(
                self._history.db,
                self._clock(),
                target=target,
                since=since,
                before=before,
                limit=limit,
            )
        except StorageError as exc:
            return _error(503, str(exc))
        return _json(view)

    async def _incident_or_error(self, request: web.Request) -> Incident | web.Response:
        if self._history is None:
            return _off()
        try:
            incident_id = parse_id(request.match_info["id"])
        except ValueError:
            return _error(400, f"an incident id is a number, 1..{MAX_ID}")
        try:
            found = await self._history.db.read(lambda c: read_incident(c, incident_id))
        except StorageError as exc:
            return _error(503, str(exc))
        if found is None:
            return _error(404, f"no incident {incident_id}")
        held = self._history.incidents.open_for(found.target)
        return held if held is not None and held.id == found.id else found

    async def incident(self, request: web.Request) -> web.Response:
        """One incident."""
        found = await self._incident_or_error(request)
        if isinstance(found, web.Response):
            return found
        return _json(hv.incident_doc(found, self._clock()))

    async def note(self, request: web.Request) -> web.Response:
        """Attach a note to an incident: `{"text": ...}`."""
        if not self._changes_allowed:
            return _refuse_changes()
        found = await self._incident_or_error(request)
        if isinstance(found, web.Response):
            return found
        body = await _body(request, NoteIn)
        if isinstance(body, web.Response):
            return body
        assert self._history is not None
        return _json(hv.incident_doc(self._history.note(found, body.text), self._clock()))

    async def uptime(self, request: web.Request) -> web.Response:
        """A target's availability per window, budget and burn rates."""
        if self._history is None:
            return _off()
        try:
            name = request.match_info["target"]
            view = await api.uptime_view(
                self._history.db, name, self._clock(), self._slo, self._opened(name)
            )
        except StorageError as exc:
            return _error(503, str(exc))
        return _json(view)

    async def uptime_list(self, _request: web.Request) -> web.Response:
        """Every target's 24 h and 30 d availability."""
        if self._history is None:
            return _off()
        try:
            view = await api.uptime_list_view(
                self._history.db, self._clock(), self._slo, self._history.rollups
            )
        except StorageError as exc:
            return _error(503, str(exc))
        return _json(view)

    async def latency(self, request: web.Request) -> web.Response:
        """A target's p50/p95 per region: `?hours=` (default 24, at most 48)."""
        if self._history is None:
            return _off()
        try:
            hours = float(request.query.get("hours", "24"))
            if not 0 < hours <= 48:
                raise ValueError("hours must be in (0, 48]")
        except ValueError as exc:
            return _error(400, f"bad query: {exc}")
        try:
            view = await api.latency_view(
                self._history.db,
                request.match_info["target"],
                self._clock(),
                hours,
                list(self._slo.latency_budgets_ms),
                self._opened(request.match_info["target"]),
            )
        except StorageError as exc:
            return _error(503, str(exc))
        return _json(view)

    async def announcement(self, _request: web.Request) -> web.Response:
        """The banner in force."""
        if self._history is None:
            return _off()
        held = self._history.announcement
        doc = None if held is None else hv.AnnouncementDoc(text=held.text, at=held.at)
        return _json(hv.AnnouncementResponse(announcement=doc))

    async def announce(self, request: web.Request) -> web.Response:
        """Set the banner: `{"text": ...}`."""
        if not self._changes_allowed:
            return _refuse_changes()
        if self._history is None:
            return _off()
        body = await _body(request, TextIn)
        if isinstance(body, web.Response):
            return body
        held = self._history.announce(body.text)
        return _json(hv.AnnouncementDoc(text=held.text, at=held.at))

    async def clear(self, _request: web.Request) -> web.Response:
        """Take the banner down."""
        if not self._changes_allowed:
            return _refuse_changes()
        if self._history is None:
            return _off()
        self._history.clear_announcement()
        return web.json_response({"cleared": True})

    async def windows(self, _request: web.Request) -> web.Response:
        """Maintenance windows not over yet."""
        if self._history is None:
            return _off()
        now = self._clock()
        docs = [hv.window_doc(w, now) for w in self._history.windows(now)]
        return _json(hv.WindowsResponse(windows=docs))

    async def maintenance(self, request: web.Request) -> web.Response:
        """Open a maintenance window now and silence the target in every Alertmanager peer."""
        if not self._changes_allowed:
            return _refuse_changes()
        if self._history is None:
            return _off()
        body = await _body(request, MaintenanceIn)
        if isinstance(body, web.Response):
            return body
        now = self._clock()
        ends = now + body.duration_s
        silences: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        if self._make_silences is not None:
            silences, errors = await self._make_silences(body.target, now, ends, body.reason)
        window = self._history.add_window(body.target, now, ends, body.reason, silences, errors)
        return _json(hv.window_doc(window, now), status=201)

    async def end_maintenance(self, request: web.Request) -> web.Response:
        """End a window now: its silences expired in every peer, its time left out no more."""
        if self._history is None:
            return _off()
        if not self._changes_allowed:
            return _refuse_changes()
        try:
            window_id = parse_id(request.match_info["id"])
        except ValueError:
            return _error(400, f"a window id is a number, 1..{MAX_ID}")
        held = self._history.window(window_id)
        if held is None:
            return _error(404, f"no maintenance window {window_id} open")
        errors: dict[str, str] = {}
        if self._expire_silences is not None:
            errors = await self._expire_silences(held.silences)
        ended = self._history.end_window(window_id, errors)
        if ended is None:  # ended meanwhile
            return _error(404, f"no maintenance window {window_id} open")
        return _json(hv.window_doc(ended, self._clock()))

    async def status_badge(self, request: web.Request) -> web.Response:
        """A shields-style badge of the live verdict."""
        name = request.match_info["target"]
        verdict = self._verdict_of(name)
        if verdict is None:
            return _error(404, f"unknown target {name!r}")
        return _svg(charts.status_badge(name, verdict))

    async def uptime_badge(self, request: web.Request) -> web.Response:
        """A shields-style badge of the availability: `?window=24h|7d|30d|90d` (30d)."""
        if self._history is None:
            return _off()
        window = request.query.get("window", "30d")
        if window not in hv.WINDOWS:
            return _error(400, f"window must be one of {', '.join(hv.WINDOWS)}")
        name = request.match_info["target"]
        # A target the engine forgot (or has not relearned since a restart) still has its
        # history. Both checks come before any query: names cost nothing to invent.
        if self._verdict_of(name) is None and not self._history.db.has_target(name):
            return _error(404, f"unknown target {name!r}")
        key = f"badge/{window}/{name}"
        cached = self._cached(key)
        if cached is None:
            try:
                view = await api.uptime_view(
                    self._history.db, name, self._clock(), self._slo, self._opened(name)
                )
            except StorageError as exc:
                return _error(503, str(exc))
            found = next(w for w in view.windows if w.window == window)
            cached = self._cache(key, charts.uptime_badge(name, found.availability, window))
        return _svg(cached)

    def _cached(self, key: str) -> str | None:
        held = self._answers.get(key)
        if held is None or held[0] <= time.monotonic():
            return None
        self._answers.move_to_end(key)
        return held[1]

    def _cache(self, key: str, text: str, seconds: float = BADGE_MAX_AGE) -> str:
        """Keep an answer that anyone may ask for often (badges, /public) for a while.

        Bounded: past `MAX_CACHED` the least recently asked for goes.
        """
        self._answers[key] = (time.monotonic() + seconds, text)
        self._answers.move_to_end(key)
        while len(self._answers) > MAX_CACHED:
            self._answers.popitem(last=False)
        return text


def _svg(text: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="image/svg+xml",
        headers={"Cache-Control": f"max-age={BADGE_MAX_AGE}"},
    )
