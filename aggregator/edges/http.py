"""The aggregator's HTTP handlers: one per resource, thin; wiring is in app.py.

`/healthz`, `/readyz` and `/metrics` for machines; `/api/v1/*` and the status page for
people, behind an optional bearer token. The API takes the token only as
`Authorization: Bearer`; the pages also take it from a cookie, set once by opening a page
with `?token=` (the page has no script, so the cookie never needs to reach the API).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from aggregator.config import Rule
from aggregator.core.alerts import AlertBook
from aggregator.core.history import SeriesStore
from aggregator.core.pipeline import Readiness
from aggregator.core.rules import Engine, OnTargetError
from aggregator.edges.http_history import BADGE_MAX_AGE, HistoryRoutes
from aggregator.present import listing, page, views
from aggregator.present.schema import openapi_document
from runtime.http import MetricsText, add_machine_routes

TOKEN_COOKIE = "vigil_token"  # noqa: S105 - the cookie's name, not a secret
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# Every response: nothing here is meant to be framed, sniffed, cached or sent on as a referrer.
# Pages get the page's policy (its style by hash), everything else allows nothing at all.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


@dataclass
class Deps:
    """What the handlers read."""

    engine: Engine
    store: SeriesStore
    alerts: AlertBook
    readiness: Readiness
    registry: CollectorRegistry
    rule_for: Callable[[str], Rule]
    clock: Callable[[], float] = time.time
    # Bearer tokens for /api/v1 and the page; empty means no auth.
    tokens: frozenset[str] = field(default_factory=frozenset)
    # Whether /healthz, /readyz and /metrics need a token too.
    protect_probes: bool = False
    # Told about a target whose view could not be built (the others are still shown).
    on_error: OnTargetError | None = None
    # `/metrics` built a step at a time (AggregatorMetrics.exposition); None: prometheus_client
    # renders `registry` in one go.
    metrics_text: MetricsText | None = None
    # The history routes (incidents, uptime, badges, ...); None: not registered.
    history: HistoryRoutes | None = None
    # Served without a token even when tokens are set.
    public_badges: bool = False
    public_page: bool = False

    def is_public(self, path: str) -> bool:
        """Whether `path` is served without a token by configuration."""
        return (self.public_badges and path.startswith("/badge/")) or (
            self.public_page and path == "/public"
        )

    def sources(self) -> views.Sources:
        """The views' inputs, as of now."""
        ready = self.readiness.reason() is None
        return views.Sources(self.engine, self.store, self.alerts, ready, self.on_error)


DEPS = web.AppKey("deps", Deps)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _is_page(request: web.Request) -> bool:
    return not request.path.startswith("/api/") and request.path not in OPEN_PATHS


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return request.cookies.get(TOKEN_COOKIE) if _is_page(request) else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _valid(token: str | None, tokens: frozenset[str]) -> bool:
    if not token:
        return False
    # Digests are compared in constant time, and every token is compared, so timing says
    # nothing about which one matched, nor about any one's length.
    presented = _digest(token)
    results = [hmac.compare_digest(presented, _digest(t)) for t in tokens]
    return any(results)


def _unauthorized(request: web.Request) -> web.Response:
    if not _is_page(request):
        return _error(401, "missing or wrong bearer token")
    return web.Response(
        status=401,
        content_type="text/html",
        text="<!doctype html><title>Vigil</title><p>Open this page with ?token=... "
        "(a token from VIGIL_API_TOKENS) to sign in.",
    )


def _sign_in(request: web.Request, tokens: frozenset[str]) -> web.Response:
    """A page opened with `?token=`: a valid token becomes the cookie, then the URL drops it.

    Only the validated query token is ever written into the cookie, and a wrong one sets
    nothing, whatever cookie the browser already holds.
    """
    presented = request.query.getall("token")
    if len(presented) != 1 or not _valid(presented[0], tokens):
        return _unauthorized(request)
    # Redirect to the route's own path: the token leaves the address bar and the history.
    response = web.Response(
        status=303, headers={"Location": str(request.rel_url.without_query_params("token"))}
    )
    response.set_cookie(
        TOKEN_COOKIE,
        presented[0],
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require a token where configured: a bearer header, or on pages the sign-in cookie."""
    deps = request.app[DEPS]
    protected = bool(deps.tokens) and (
        (request.path not in OPEN_PATHS or deps.protect_probes) and not deps.is_public(request.path)
    )
    if not protected:
        return await handler(request)
    # Only an existing page signs in: an unrouted path could make the redirect leave the site.
    routed = request.match_info.http_exception is None
    if "token" in request.query and _is_page(request) and routed:
        return _sign_in(request, deps.tokens)
    if not _valid(_token(request), deps.tokens):
        return _unauthorized(request)
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, errors included: no framing, sniffing, caching or referrer."""
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/badge/") and response.status == 200:
        # Badges are meant to be embedded and cached (a README's image proxy).
        deps = request.app[DEPS]
        scope = "public" if deps.public_badges or not deps.tokens else "private"
        response.headers["Cache-Control"] = f"{scope}, max-age={BADGE_MAX_AGE}"
    html = response.content_type == "text/html"
    response.headers["Content-Security-Policy"] = page.CONTENT_SECURITY_POLICY if html else API_CSP


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors under /api/ are JSON with a message, whatever raised them."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise


async def readyz(request: web.Request) -> web.Response:
    """200 once connected and retained state is loaded; 503 with the reason before."""
    reason = request.app[DEPS].readiness.reason()
    if reason is not None:
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})


async def status(request: web.Request) -> web.Response:
    """A page of targets, problems first, filtered as asked, with the counts over all."""
    deps = request.app[DEPS]
    try:
        query = listing.parse_query(request.query.items(), deps.engine.regions)
    except listing.QueryError as exc:
        return _error(400, str(exc))
    return _json(views.status(deps.sources(), deps.clock(), query))


async def target(request: web.Request) -> web.Response:
    """One target with its recent results per region."""
    deps = request.app[DEPS]
    name = request.match_info["target"]
    detail = views.target_detail(deps.sources(), name, deps.clock())
    return _json(detail) if detail is not None else _error(404, f"unknown target {name!r}")


async def explain(request: web.Request) -> web.Response:
    """Why the target is or is not alerting, as the rule evaluated it."""
    deps = request.app[DEPS]
    name = request.match_info["target"]
    if name not in deps.engine:
        return _error(404, f"unknown target {name!r}")
    why = views.explain(deps.sources(), name, deps.rule_for(name), deps.clock())
    assert why is not None
    return _json(why)


async def regions(request: web.Request) -> web.Response:
    """Each region's probes: presence, boot id, last seen, targets."""
    deps = request.app[DEPS]
    return _json(views.regions(deps.sources(), deps.clock()))


async def alerts(request: web.Request) -> web.Response:
    """Alerts firing and recently resolved."""
    return _json(views.alerts(request.app[DEPS].sources()))


async def openapi(_request: web.Request) -> web.Response:
    """The OpenAPI document of /api/v1, generated from the response models."""
    return web.json_response(openapi_document())


async def index(request: web.Request) -> web.Response:
    """The status page: counts, then a page of targets x regions, problems first."""
    deps = request.app[DEPS]
    try:
        query = listing.parse_query(
            request.query.items(), deps.engine.regions, default_limit=page.ROWS
        )
    except listing.QueryError as exc:
        text = page.query_error_page(str(exc))
        return web.Response(status=400, text=text, content_type="text/html")
    src = deps.sources()
    shown = views.status(src, deps.clock(), query)
    names = [t.target for t in shown.targets]
    history = deps.history
    html = page.status_page(
        shown,
        views.histories(src, names),
        views.alerts(src),
        query,
        top=history.page_top() if history is not None else "",
        bottom=history.page_bottom() if history is not None else "",
    )
    return web.Response(text=html, content_type="text/html")


async def target_page(request: web.Request) -> web.Response:
    """One target's page: the explain view and recent results."""
    deps = request.app[DEPS]
    name = request.match_info["target"]
    now = deps.clock()
    detail = views.target_detail(deps.sources(), name, now)
    why = views.explain(deps.sources(), name, deps.rule_for(name), now)
    if detail is None or why is None:
        raise web.HTTPNotFound(text=f"unknown target {name}")
    extra = await deps.history.target_extra(name) if deps.history is not None else ""
    return web.Response(text=page.target_page(detail, why, extra), content_type="text/html")


def make_app(deps: Deps) -> web.Application:
    """The aggregator's HTTP application."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[DEPS] = deps
    app.on_response_prepare.append(add_security_headers)
    add_machine_routes(app, deps.registry, deps.metrics_text)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/targets/{target}", target)
    app.router.add_get("/api/v1/targets/{target}/explain", explain)
    app.router.add_get("/api/v1/regions", regions)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/", index)
    app.router.add_get("/targets/{target}", target_page)
    if deps.history is not None:
        deps.history.add_to(app)
    return app
