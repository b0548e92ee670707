"""Service profiles: the endpoints and checks a known service answers, as data.

A target names a profile (`profile: omniroute`); the profile fills the target's keys the
config leaves unset and lists the health endpoints the service may answer on. Adding a
service is one more entry in `PROFILES`.

Detection between a profile's health endpoints is explicit: the probe moves from the endpoint
it uses to the next only when that endpoint answers 404 (the route does not exist in this
generation of the service). Any other failure (401, 403, 5xx, a timeout) is reported as it is
and never moves it, so a guess cannot hide an outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class HealthEndpoint:
    """One health endpoint: its path, the body check, and where it carries the version.

    Attributes:
        path: the path on the target's base URL, starting with '/'.
        json_field: the (dotted) body field to check; None accepts any body.
        equals: the value `json_field` must have.
        version_field: the body field holding the running version, or None when the
            version comes only from the version endpoint.
        auth_hint: added to the error of a 401 or 403 from this endpoint when the target
            follows the profile's endpoints: where else the service may answer (the probe
            never moves on a 401, so a human has to).
    """

    path: str
    json_field: str | None = "status"
    equals: str | int | float | bool = "ok"
    version_field: str | None = None
    auth_hint: str | None = None


@dataclass(frozen=True)
class Profile:
    """A known service.

    Attributes:
        defaults: target keys (as in the config file) filled in when the target leaves
            them unset.
        endpoints: the health endpoints in order of preference; the first is the primary.
            Empty: the target's own `health_path` and `body` are the only endpoint.
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    endpoints: tuple[HealthEndpoint, ...] = ()


PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        # Today's behaviour: the target's explicit paths, or the config defaults.
        "generic": Profile(),
        # OmniRoute source trees answer GET /api/health/ping with {"status":"ok"}; the
        # published 3.7.x has no such route (404 to an authenticated caller) and answers
        # the public GET /api/monitoring/health with {"status":"healthy","version":...}.
        "omniroute": Profile(
            defaults={
                "health_path": "/api/health/ping",
                "version_path": "/api/system/version",
                "version_field": "current",
                # OmniRoute's p99 for the ping. Its p50/p95 (5/20 ms) are not per target:
                # the aggregator's chart lines (slo.latency_budgets_ms) default to them.
                "latency_budget": 0.05,
            },
            endpoints=(
                HealthEndpoint(
                    "/api/health/ping",
                    "status",
                    "ok",
                    # 3.7.x has no ping route and answers 401 to a caller without a session.
                    auth_hint="a 3.7.x release answers on /api/monitoring/health: set health_path",
                ),
                HealthEndpoint(
                    "/api/monitoring/health", "status", "healthy", version_field="version"
                ),
            ),
        ),
    }
)
