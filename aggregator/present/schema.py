"""The operator API's response models, and the OpenAPI document generated from them.

Handlers build these models, so what the API answers and what the document declares cannot
drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from aggregator.present import historyviews as hv
from aggregator.present.listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_SEARCH, VERDICTS
from wire.result import NAME_PATTERN, Phases, VersionErrorKind


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class LastResult(_Model):
    """A region's latest result for a target."""

    started_at: float
    ok: bool
    status_code: int | None
    error_kind: str | None
    error: str | None
    duration_ms: float
    phases: Phases | None
    # The health endpoint that answered (a profile may move between several); None from
    # probes that do not say.
    health_path: str | None = None


class RegionStatus(_Model):
    """One region's view of one target."""

    region: str
    failing: bool
    failing_since: float | None
    stale: bool
    stale_reason: str | None
    # Not enough results yet to judge this region either way (it counts as neither).
    pending: bool = False
    consecutive_failures: int
    consecutive_successes: int
    version: str | None
    version_since: float | None
    # Why the latest version fetch gave no version; `version` is then the last one known.
    version_error: VersionErrorKind | None
    # The HTTP status behind `version_error` (e.g. 403 for `auth`), when an answer came.
    version_status: int | None = None
    last_result: LastResult | None


class Quorum(_Model):
    """The regions behind a verdict."""

    failing: list[str]
    fresh: list[str]
    stale: list[str]
    required: int
    min_regions: int


class TargetStatus(_Model):
    """A target's verdict and every region's view."""

    target: str
    verdict: Literal["up", "down", "degraded", "unknown"]
    since: float
    quorum_degraded: bool
    version_skew: bool
    quorum: Quorum
    regions: list[RegionStatus]


class VerdictCounts(_Model):
    """How many targets have each verdict."""

    down: int
    degraded: int
    unknown: int
    up: int
    total: int


class StatusResponse(_Model):
    """`GET /api/v1/status`: one page of targets, problems first, and the counts."""

    ready: bool
    generated_at: float
    # The regions each target's `regions` shows: every configured one, or the `region` asked.
    regions: list[str]
    # This page's targets: down, degraded, unknown, then up; by name within each.
    targets: list[TargetStatus]
    # Every target by verdict, whatever the filter.
    counts: VerdictCounts
    # The targets the `region` and `q` filters keep, by verdict (the `verdict` filter aside).
    matching: VerdictCounts
    # The targets every filter keeps, over all pages.
    matched: int
    # Pass as `cursor` for the next page; null on the last page.
    next_cursor: str | None


class HistoryPoint(_Model):
    """One recent result."""

    started_at: float
    duration_ms: float
    status_code: int | None
    outcome: str


# A recent result as the status page's sparklines read it, straight from the history store:
# (started_at, duration_ms, status_code, outcome). Plain tuples: a page of 50 targets would
# otherwise build 3,000 HistoryPoint models per render, most of its time and garbage.
RecentPoint = tuple[float, float, int | None, str]


class TargetDetail(TargetStatus):
    """`GET /api/v1/targets/{target}`: the status plus recent results per region."""

    history: dict[str, list[HistoryPoint]]


class ProbeInfo(_Model):
    """A probe's presence."""

    probe_id: str
    boot_id: str
    online: bool
    last_seen: float
    targets: dict[str, float]


class RegionInfo(_Model):
    """A configured region and its probes."""

    region: str
    stale: bool
    probes: list[ProbeInfo]


class RegionsResponse(_Model):
    """`GET /api/v1/regions`."""

    regions: list[RegionInfo]


class AlertInfo(_Model):
    """An alert the aggregator has firing or recently resolved."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    resolved_at: float | None
    generator_url: str


class AlertsResponse(_Model):
    """`GET /api/v1/alerts`."""

    firing: list[AlertInfo]
    resolved: list[AlertInfo]


class ExplainRegion(_Model):
    """How the rule counted one region."""

    region: str
    counted_as: Literal["failing", "ok", "stale", "pending"]
    reason: str
    consecutive_failures: int
    failures_needed: int
    consecutive_successes: int
    recoveries_needed: int
    failing_since: float | None
    last_result_age_s: float | None
    stale_after_s: float


class ExplainResponse(_Model):
    """`GET /api/v1/targets/{target}/explain`: why the target is or is not alerting."""

    target: str
    verdict: Literal["up", "down", "degraded", "unknown"]
    alerting: bool
    quorum_degraded: bool
    rule: dict[str, float | None]
    regions: list[ExplainRegion]
    arithmetic: list[str]


class ErrorResponse(_Model):
    """Any error: a message."""

    error: str


def _status_parameters() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    one = f"({'|'.join(VERDICTS)})"
    return [
        query(
            "verdict",
            {"type": "string", "pattern": f"^{one}(,{one})*$"},
            f"comma-separated verdicts to keep ({', '.join(VERDICTS)}); default: all",
        ),
        query(
            "region",
            {"type": "string"},
            "a configured region: only targets it has reported on, showing only its view",
        ),
        query(
            "q",
            {"type": "string", "maxLength": MAX_SEARCH},
            "targets whose name contains this, ignoring case",
        ),
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "targets per page",
        ),
        query("cursor", {"type": "string"}, "`next_cursor` of the previous page, as it is"),
    ]


def _op(
    summary: str,
    model: str,
    *,
    target: bool = False,
    errors: tuple[int, ...] = (401,),
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": summary,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        }
    }
    for code in errors:
        responses[str(code)] = {
            "description": {
                400: "a bad query parameter or body, named in the message",
                401: "missing or wrong token",
                404: "unknown target or incident, or history off (no storage.path)",
                503: "the history database could not answer",
            }[code],
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if target:
        op["parameters"] = [
            {
                "name": "target",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
        ]
    if parameters:
        op["parameters"] = parameters
    return {"get": op}


def _history_paths() -> dict[str, Any]:
    def q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    def path(name: str, kind: str = "string") -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}

    def body(model: str, summary: str) -> dict[str, Any]:
        op: dict[str, Any] = _op(summary, model, errors=(400, 401, 404))["get"]

        def text(most: int) -> dict[str, Any]:
            return {"type": "string", "minLength": 1, "maxLength": most}

        bodies: dict[str, dict[str, dict[str, Any]]] = {
            "AnnouncementDoc": {"text": text(500)},
            "IncidentDoc": {"text": text(2000)},
            "WindowDoc": {
                "target": {"type": "string", "pattern": NAME_PATTERN},
                "duration_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 7 * 86400},
                "reason": text(500),
            },
        }
        fields = bodies[model]
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": fields,
                        "required": list(fields),
                        "additionalProperties": False,
                    }
                }
            },
        }
        return op

    listing = [
        q("target", {"type": "string"}, "only this target's incidents"),
        q("since", {"type": "string"}, "epoch seconds or RFC 3339: incidents not over by then"),
        q("before", {"type": "integer"}, "`next_before` of the previous page"),
        q("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "per page"),
    ]
    incident = _op("One incident", "IncidentDoc", errors=(400, 401, 404))
    incident["get"]["parameters"] = [path("id", "integer")]
    note = {"post": body("IncidentDoc", "Attach a note to an incident")}
    note["post"]["parameters"] = [path("id", "integer")]
    note["post"]["responses"]["403"] = {"description": "changes need an API token"}
    latency = _op("p50/p95 per region", "LatencyResponse", target=True, errors=(400, 401, 404))
    latency["get"]["parameters"].append(
        q(
            "hours",
            {"type": "number", "exclusiveMinimum": 0, "maximum": 48, "default": 24},
            "how far back: minute buckets up to 6 h, hourly beyond",
        )
    )
    announcements = _op("The banner in force", "AnnouncementResponse", errors=(401, 404))
    announcements["post"] = body("AnnouncementDoc", "Set the banner")
    announcements["delete"] = {
        "summary": "Take the banner down",
        "responses": {"200": {"description": "cleared"}},
    }
    maintenance = _op("Maintenance windows not over yet", "WindowsResponse", errors=(401, 404))
    maintenance["post"] = body(
        "WindowDoc", "Open a maintenance window now; silences the target in every Alertmanager"
    )
    return {
        "/api/v1/incidents": _op(
            "Incidents, newest first",
            "IncidentsResponse",
            errors=(400, 401, 404),
            parameters=listing,
        ),
        "/api/v1/incidents/{id}": incident,
        "/api/v1/incidents/{id}/note": note,
        "/api/v1/targets/{target}/incidents": _op(
            "One target's incidents, newest first",
            "IncidentsResponse",
            target=True,
            errors=(400, 401, 404),
        ),
        "/api/v1/targets/{target}/uptime": _op(
            "Availability per window, error budget, burn rates, 90-day bar",
            "UptimeResponse",
            target=True,
            errors=(401, 404, 503),
        ),
        "/api/v1/targets/{target}/latency": latency,
        "/api/v1/uptime": _op(
            "Every target's 24 h and 30 d availability", "UptimeListResponse", errors=(401, 404)
        ),
        "/api/v1/announcements": announcements,
        "/api/v1/maintenance": maintenance,
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of `/api/v1`."""
    models: list[type[BaseModel]] = [
        StatusResponse,
        TargetDetail,
        RegionsResponse,
        AlertsResponse,
        ExplainResponse,
        ErrorResponse,
        hv.IncidentsResponse,
        hv.IncidentDoc,
        hv.UptimeResponse,
        hv.UptimeListResponse,
        hv.LatencyResponse,
        hv.AnnouncementResponse,
        hv.AnnouncementDoc,
        hv.WindowsResponse,
        hv.WindowDoc,
    ]
    _, defs = models_json_schema(
        [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vigil aggregator", "version": "1"},
        "paths": {
            "/api/v1/status": _op(
                "A page of targets, problems first, with each region's view and the counts",
                "StatusResponse",
                errors=(400, 401),
                parameters=_status_parameters(),
            ),
            "/api/v1/targets/{target}": _op(
                "One target, with recent results per region",
                "TargetDetail",
                target=True,
                errors=(401, 404),
            ),
            "/api/v1/targets/{target}/explain": _op(
                "Why the target is or is not alerting",
                "ExplainResponse",
                target=True,
                errors=(401, 404),
            ),
            "/api/v1/regions": _op("Each region's probes and presence", "RegionsResponse"),
            "/api/v1/alerts": _op("Alerts firing and recently resolved", "AlertsResponse"),
            **_history_paths(),
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
