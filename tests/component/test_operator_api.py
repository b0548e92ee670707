"""The operator API and status page in-process: every endpoint, auth, 404, declared shapes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig
from aggregator.edges.http import make_app
from aggregator.present.schema import openapi_document
from cli import status as cli_status
from tests.rulekit import REGIONS, Clock, RegionProbe, online
from wire.result import VersionErrorKind
from wire.topics import presence_topic, result_topic

TOKEN = "tok-3f9a"


def fed(
    tokens: list[str] | None = None, *, protect_probes: bool = False
) -> tuple[Aggregator, Clock]:
    """An aggregator past warm-up: `api` down (all regions), `web` failing in eu-west only."""
    clock = Clock()
    config = AggregatorConfig.model_validate(
        {
            "regions": list(REGIONS),
            "api": {"tokens": tokens or [], "protect_probes": protect_probes},
            "alertmanager": {"region_down_for": "10s"},
        }
    )
    agg = build(config, CollectorRegistry(), None, clock=clock)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    for region in REGIONS:
        presence = online(region, ("api", "web"), clock.now)
        agg.pipeline.handle(presence_topic(region, f"{region}-1"), presence.to_json(), False)
    probes = {(t, r): RegionProbe(r, target=t) for t in ("api", "web") for r in REGIONS}
    for i in range(4):
        clock.now += 10
        for (t, r), p in probes.items():
            ok = i == 0 or (t == "web" and r != "eu-west")
            agg.pipeline.handle(result_topic(r, t), p.check(ok, clock.now).to_json(), False)
    clock.now += 10  # eu-west has now failed alone for region_down_for (10 s)
    agg.pipeline.tick(subscribed=True)
    return agg, clock


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    agg, _ = fed()
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        yield c


def validator(model: str) -> Any:
    doc = openapi_document()
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{model}", "components": doc["components"]}
    )


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/api/v1/status", "StatusResponse"),
        ("/api/v1/targets/api", "TargetDetail"),
        ("/api/v1/targets/api/explain", "ExplainResponse"),
        ("/api/v1/regions", "RegionsResponse"),
        ("/api/v1/alerts", "AlertsResponse"),
    ],
)
async def test_each_endpoint_matches_its_declared_shape(
    client: TestClient[Any, Any], path: str, model: str
) -> None:
    """Every API answer validates against the schema the OpenAPI document declares for it."""
    resp = await client.get(path)
    assert resp.status == 200
    body = await resp.json()
    errors = [str(e) for e in validator(model).iter_errors(body)]
    assert errors == []
    doc = (await (await client.get("/api/v1/openapi.json")).json())["paths"]
    templated = path.replace("/api/v1/targets/api", "/api/v1/targets/{target}")
    ref = doc[templated]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": f"#/components/schemas/{model}"}


async def test_status_content(client: TestClient[Any, Any]) -> None:
    """Status shows each verdict, since when, and each region's last result and version."""
    body = await (await client.get("/api/v1/status")).json()
    targets = {t["target"]: t for t in body["targets"]}
    assert targets["api"]["verdict"] == "down"
    assert targets["web"]["verdict"] == "degraded"
    eu = next(r for r in targets["web"]["regions"] if r["region"] == "eu-west")
    assert eu["failing"] is True
    assert eu["consecutive_failures"] == 3
    assert eu["last_result"]["status_code"] == 503
    assert eu["last_result"]["error_kind"] == "http_status"
    assert eu["version"] == "3.8.34"
    assert body["regions"] == list(REGIONS)


async def test_target_history_and_explain(client: TestClient[Any, Any]) -> None:
    """A target's page data: recent results per region, and the rule's arithmetic."""
    detail = await (await client.get("/api/v1/targets/web")).json()
    assert [p["outcome"] for p in detail["history"]["eu-west"]] == ["ok"] + ["http_status"] * 3
    why = await (await client.get("/api/v1/targets/web/explain")).json()
    assert why["verdict"] == "degraded"
    assert why["alerting"] is False
    eu = next(r for r in why["regions"] if r["region"] == "eu-west")
    assert eu["counted_as"] == "failing"
    assert (eu["consecutive_failures"], eu["failures_needed"]) == (3, 3)
    assert any("1 failing of 3 fresh" in line for line in why["arithmetic"])
    down = await (await client.get("/api/v1/targets/api/explain")).json()
    assert down["alerting"] is True
    assert any("3 >= 3: down" in line for line in down["arithmetic"])


async def test_regions_and_alerts(client: TestClient[Any, Any]) -> None:
    """Regions list their probes' presence; alerts list what fires."""
    regions = await (await client.get("/api/v1/regions")).json()
    us = next(r for r in regions["regions"] if r["region"] == "us-east")
    assert us["probes"][0]["probe_id"] == "us-east-1"
    assert us["probes"][0]["online"] is True
    assert us["probes"][0]["targets"] == {"api": 10.0, "web": 10.0}
    alerts = await (await client.get("/api/v1/alerts")).json()
    names = sorted(a["labels"]["alertname"] for a in alerts["firing"])
    assert names == ["ServiceDown", "ServiceRegionDown"]


async def test_unknown_target_is_a_json_404(client: TestClient[Any, Any]) -> None:
    """An unknown target answers 404 with a JSON message, on both target endpoints."""
    for path in ("/api/v1/targets/nope", "/api/v1/targets/nope/explain", "/api/v1/nothing"):
        resp = await client.get(path)
        assert resp.status == 404
        assert "error" in await resp.json()


async def test_pages_render(client: TestClient[Any, Any]) -> None:
    """The status page shows the grid in words; a target page shows the arithmetic."""
    html = await (await client.get("/")).text()
    assert 'data-target="api"' in html
    assert "✖ DOWN" in html
    assert "▲ DEGRADED" in html
    assert "✖ FAILING x3" in html
    assert "<svg" in html
    assert 'http-equiv="refresh"' in html
    target = await (await client.get("/targets/web")).text()
    assert "1 failing of 3 fresh regions" in target
    assert (await client.get("/targets/nope")).status == 404


MONITORING = "/api/monitoring/health"


def with_version_errors() -> Aggregator:
    """`fed()` plus `cms`: us-east read 3.7.9 then got 403, eu-west never got past a 401.

    us-east and eu-west say their health endpoint (monitoring/health); ap-southeast's probe
    is older and says neither an endpoint nor a version status.
    """
    agg, clock = fed()
    us, eu, ap = (RegionProbe(r, target="cms") for r in REGIONS)
    auth = {"version": None, "version_error": VersionErrorKind.AUTH}
    path = {"health_path": MONITORING}
    for i in range(2):
        clock.now += 1
        first = us.check(True, clock.now, "3.7.9").model_copy(update=path)
        results = [
            first if i == 0 else first.model_copy(update={**auth, "version_status": 403}),
            eu.check(True, clock.now, None).model_copy(
                update={**auth, **path, "version_status": 401}
            ),
            ap.check(True, clock.now, "3.7.9"),
        ]
        for r in results:
            agg.pipeline.handle(result_topic(r.region, "cms"), r.to_json(), False)
    agg.pipeline.tick(subscribed=True)
    return agg


@pytest.fixture
async def versions_client() -> AsyncIterator[TestClient[Any, Any]]:
    agg = with_version_errors()
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        yield c


async def test_api_shows_each_regions_version_error(
    versions_client: TestClient[Any, Any],
) -> None:
    """The status API gives each region's version_error beside its last known version."""
    body = await (await versions_client.get("/api/v1/status")).json()
    assert validator("StatusResponse").is_valid(body)
    cms = next(t for t in body["targets"] if t["target"] == "cms")
    said = {
        r["region"]: (r["version"], r["version_error"], r["version_status"]) for r in cms["regions"]
    }
    assert said == {
        "us-east": ("3.7.9", "auth", 403),
        "eu-west": (None, "auth", 401),
        "ap-southeast": ("3.7.9", None, None),
    }


async def test_api_and_page_show_which_health_endpoint_answered(
    versions_client: TestClient[Any, Any],
) -> None:
    """Each region's last result names the health endpoint that answered; None when unsaid."""
    body = await (await versions_client.get("/api/v1/status")).json()
    cms = next(t for t in body["targets"] if t["target"] == "cms")
    said = {r["region"]: r["last_result"]["health_path"] for r in cms["regions"]}
    assert said == {"us-east": MONITORING, "eu-west": MONITORING, "ap-southeast": None}
    detail = await (await versions_client.get("/api/v1/targets/cms")).json()
    assert detail["regions"][0]["last_result"]["health_path"] == MONITORING
    html = await (await versions_client.get("/")).text()
    assert f"in 12 ms on {MONITORING}" in html


async def test_page_shows_why_a_version_is_unknown(versions_client: TestClient[Any, Any]) -> None:
    """The page says "version unknown: auth (401)", and a failed fetch beside a known version."""
    html = await (await versions_client.get("/")).text()
    assert "version 3.7.9 (last fetch: auth (403))" in html
    assert "version unknown: auth (401)" in html


async def test_vigil_status_prints_why_a_version_is_unknown(
    versions_client: TestClient[Any, Any],
) -> None:
    """`vigil status` shows the version error in the region's column."""
    out = io.StringIO()
    url = str(versions_client.make_url("/"))
    code = await asyncio.to_thread(cli_status.run, url, "cms", False, None, out)
    assert code == cli_status.EXIT_UP
    [_header, row] = out.getvalue().splitlines()
    assert "ok +2 3.7.9 (last fetch: auth (403))" in row
    assert "ok +2 version unknown: auth (401)" in row


async def test_bearer_auth() -> None:
    """With tokens set, the API and pages need one; health, readiness and metrics do not."""
    agg, _ = fed(tokens=[TOKEN])
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        assert (await c.get("/api/v1/status")).status == 401
        wrong = await c.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert await wrong.json() == {"error": "missing or wrong bearer token"}
        ok = await c.get("/api/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
        assert (await c.get("/")).status == 401
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await c.get(path)).status == 200
        # A person opens the page with ?token= once; it becomes a cookie and leaves the URL.
        signed = await c.get(f"/?token={TOKEN}", allow_redirects=False)
        assert signed.status == 303
        assert signed.headers["Location"] == "/"
        assert "HttpOnly" in signed.headers["Set-Cookie"]
        assert (await c.get("/")).status == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize(
    ("tokens", "protect_probes", "header", "expected"),
    [
        ([TOKEN], True, None, 401),
        ([TOKEN], True, "Bearer nope", 401),
        ([TOKEN], True, f"Bearer {TOKEN}", 200),
        ([TOKEN], False, None, 200),
        ([], True, None, 200),  # no tokens configured: nothing to check against
    ],
)
async def test_protect_probes_puts_health_readiness_and_metrics_behind_the_token(
    path: str, tokens: list[str], protect_probes: bool, header: str | None, expected: int
) -> None:
    """With protect_probes and tokens set, /healthz, /readyz and /metrics need a valid token."""
    agg, _ = fed(tokens=tokens, protect_probes=protect_probes)
    headers = {"Authorization": header} if header else {}
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        resp = await c.get(path, headers=headers)
        assert resp.status == expected
        if expected == 401:
            assert await resp.json() == {"error": "missing or wrong bearer token"}
