"""The probe's own HTTP port: /healthz and /metrics. Wiring is in app.py."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from runtime.http import add_machine_routes


def make_app(registry: CollectorRegistry) -> web.Application:
    """The probe's HTTP application."""
    app = web.Application()
    add_machine_routes(app, registry)
    return app
