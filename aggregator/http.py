"""The aggregator's HTTP handlers: health, readiness, metrics and a status summary.

Handlers only read; wiring is in app.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from aggregator.rules import Engine, Evaluation, RegionEvidence


@dataclass
class Readiness:
    """What /readyz reports; set by the app as it connects and loads retained state."""

    connected: bool = False
    loaded: bool = False

    def reason(self) -> str | None:
        """Why the aggregator is not ready, or None when it is."""
        if not self.connected:
            return "not connected to the MQTT broker"
        if not self.loaded:
            return "loading retained state from the broker"
        return None


ENGINE = web.AppKey("engine", Engine)
REGISTRY = web.AppKey("registry", CollectorRegistry)
READINESS = web.AppKey("readiness", Readiness)
CLOCK = web.AppKey[Callable[[], float]]("clock")


async def healthz(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 once connected and retained state is loaded; 503 with the reason before."""
    reason = request.app[READINESS].reason()
    if reason is not None:
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _region(e: RegionEvidence) -> dict[str, Any]:
    return {
        "region": e.region,
        "failing": e.failing,
        "failing_since": e.failing_since,
        "stale": e.stale,
        "stale_reason": e.stale_reason,
        "consecutive_failures": e.consecutive_failures,
        "consecutive_successes": e.consecutive_successes,
        "status_code": e.status_code,
        "error_kind": e.error_kind,
        "error": e.error,
        "version": e.version,
        "last_result_at": e.last_result_at,
    }


def _evaluation(ev: Evaluation) -> dict[str, Any]:
    return {
        "quorum": {
            "failing": sorted(ev.failing),
            "fresh": sorted(ev.fresh),
            "stale": sorted(ev.stale),
            "required": ev.required,
            "min_regions": ev.min_regions,
        },
        "regions": [_region(r) for r in ev.regions],
    }


async def status(request: web.Request) -> web.Response:
    """Every target's verdict, since when, and each region's view as of now."""
    engine = request.app[ENGINE]
    now = request.app[CLOCK]()
    targets = [
        {
            "target": name,
            "verdict": state.verdict.value,
            "since": state.since,
            "quorum_degraded": state.quorum_degraded,
            "version_skew": state.version_skew,
            # Evidence is judged afresh: streaks and errors move with every result, while
            # the stored evaluation is refreshed only when something changes.
            **_evaluation(engine.judge(name, now)),
        }
        for name, state in sorted(engine.targets.items())
    ]
    return web.json_response({"ready": request.app[READINESS].reason() is None, "targets": targets})


def make_app(
    engine: Engine,
    registry: CollectorRegistry,
    readiness: Readiness,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The aggregator's HTTP application."""
    app = web.Application()
    app[CLOCK] = clock
    app[ENGINE] = engine
    app[REGISTRY] = registry
    app[READINESS] = readiness
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status)
    return app
