"""The paged status API, the status page and `vigil status` over a fleet of mixed verdicts."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig
from aggregator.edges.http import API_CSP, make_app
from aggregator.present.schema import openapi_document
from cli import status as cli_status
from tests.rulekit import REGIONS, Clock, RegionProbe, online
from wire.topics import presence_topic, result_topic

# name -> verdict it ends with; "unknown": only us-east reports it (fewer than min_regions).
FLEET = {
    **{f"svc-{i:02d}": "up" for i in range(12)},
    "api": "down",
    "Payments": "down",
    "web": "degraded",
    "cdn-edge": "degraded",
    "lonely": "unknown",
}
TOKEN = "tok-77c1"


def reporters(verdict: str) -> tuple[str, ...]:
    return ("us-east",) if verdict == "unknown" else REGIONS


def feed(agg: Aggregator, clock: Clock, fleet: dict[str, str], step: float = 10) -> None:
    """Four rounds of results `step` apart: down fails everywhere, degraded in eu-west only."""
    probes = {(t, r): RegionProbe(r, target=t) for t, v in fleet.items() for r in reporters(v)}
    for i in range(4):
        clock.now += step
        for (t, r), p in probes.items():
            verdict = fleet[t]
            ok = (
                i == 0 or verdict in ("up", "unknown") or (verdict == "degraded" and r != "eu-west")
            )
            agg.pipeline.handle(result_topic(r, t), p.check(ok, clock.now).to_json(), False)
    clock.now += 1
    agg.pipeline.tick(subscribed=True)


def fleet_aggregator(tokens: list[str] | None = None) -> tuple[Aggregator, Clock]:
    clock = Clock()
    config = AggregatorConfig.model_validate(
        {"regions": list(REGIONS), "api": {"tokens": tokens or []}}
    )
    agg = build(config, CollectorRegistry(), None, clock=clock)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    for region in REGIONS:
        listed = [t for t, v in FLEET.items() if region in reporters(v)]
        presence = online(region, listed, clock.now)
        agg.pipeline.handle(presence_topic(region, f"{region}-1"), presence.to_json(), False)
    feed(agg, clock, FLEET)
    return agg, clock


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[TestClient[Any, Any], Aggregator, Clock]]:
    agg, clock = fleet_aggregator()
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        yield c, agg, clock


@pytest.fixture
def client(fleet: tuple[TestClient[Any, Any], Aggregator, Clock]) -> TestClient[Any, Any]:
    return fleet[0]


ORDER = [
    "Payments",
    "api",
    "cdn-edge",
    "web",
    "lonely",
    *(f"svc-{i:02d}" for i in range(12)),
]


async def listing(client: TestClient[Any, Any], **params: str) -> dict[str, Any]:
    resp = await client.get("/api/v1/status", params=params)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def walk(client: TestClient[Any, Any], **params: str) -> list[str]:
    seen: list[str] = []
    while True:
        body = await listing(client, **params)
        seen += [t["target"] for t in body["targets"]]
        if body["next_cursor"] is None:
            return seen
        params["cursor"] = body["next_cursor"]


async def test_status_lists_problems_first_with_counts(client: TestClient[Any, Any]) -> None:
    """Down, degraded, unknown, up, by name within each; counts by verdict over all."""
    body = await listing(client)
    assert [t["target"] for t in body["targets"]] == ORDER
    assert [t["verdict"] for t in body["targets"][:5]] == [
        "down",
        "down",
        "degraded",
        "degraded",
        "unknown",
    ]
    counts = {"down": 2, "degraded": 2, "unknown": 1, "up": 12, "total": 17}
    assert body["counts"] == body["matching"] == counts
    assert body["matched"] == 17
    assert body["next_cursor"] is None
    assert body["regions"] == list(REGIONS)


async def test_verdict_filter_keeps_the_counts_over_all(client: TestClient[Any, Any]) -> None:
    """verdict=down,degraded lists those only; counts still cover every target."""
    body = await listing(client, verdict="down,degraded")
    assert [t["target"] for t in body["targets"]] == ["Payments", "api", "cdn-edge", "web"]
    assert body["counts"]["total"] == 17
    assert body["counts"]["up"] == 12
    assert body["matched"] == 4


async def test_search_is_a_case_insensitive_name_substring(client: TestClient[Any, Any]) -> None:
    """q=PAY finds Payments; the matching counts are the search's."""
    body = await listing(client, q="PAY")
    assert [t["target"] for t in body["targets"]] == ["Payments"]
    assert body["matching"] == {"down": 1, "degraded": 0, "unknown": 0, "up": 0, "total": 1}
    assert body["counts"]["total"] == 17


async def test_region_filter_shows_only_that_regions_view(client: TestClient[Any, Any]) -> None:
    """region=eu-west keeps the targets eu-west reports on, each with eu-west's view only."""
    body = await listing(client, region="eu-west")
    assert "lonely" not in [t["target"] for t in body["targets"]]
    assert body["matched"] == 16
    assert body["regions"] == ["eu-west"]
    web = next(t for t in body["targets"] if t["target"] == "web")
    assert [r["region"] for r in web["regions"]] == ["eu-west"]
    assert web["regions"][0]["failing"] is True
    assert web["verdict"] == "degraded"
    lonely = await listing(client, region="us-east", q="lonely")
    assert [t["target"] for t in lonely["targets"]] == ["lonely"]


async def test_pages_walk_every_target_once(client: TestClient[Any, Any]) -> None:
    """With limit=4, following next_cursor lists every target once, in order."""
    first = await listing(client, limit="4")
    assert len(first["targets"]) == 4
    assert first["next_cursor"] is not None
    assert first["matched"] == 17
    assert await walk(client, limit="4") == ORDER
    assert await walk(client, limit="1", verdict="up") == ORDER[5:]


async def test_cursor_is_stable_when_targets_change_between_pages(
    fleet: tuple[TestClient[Any, Any], Aggregator, Clock],
) -> None:
    """A target that appears before the cursor is neither listed nor makes another repeat."""
    client, agg, clock = fleet
    first = await listing(client, limit="5")
    assert [t["target"] for t in first["targets"]] == ORDER[:5]
    # A new target that sorts first (down, "Aaa") and one that sorts among the rest (up),
    # within seconds, so no other target changes.
    feed(agg, clock, {"Aaa-new": "down", "svc-05a": "up"}, step=1)
    rest = await walk(client, limit="5", cursor=first["next_cursor"])
    assert rest == [*ORDER[5:11], "svc-05a", *ORDER[11:]]
    assert (await listing(client))["counts"]["total"] == 19


async def test_views_are_built_for_the_page_only(
    fleet: tuple[TestClient[Any, Any], Aggregator, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting every target judges none of them: only the page's targets get a view."""
    client, agg, _ = fleet
    judged: list[str] = []
    judge = agg.engine.judge

    def spy(name: str, now: float) -> Any:
        judged.append(name)
        return judge(name, now)

    monkeypatch.setattr(agg.engine, "judge", spy)
    body = await listing(client, limit="3")
    assert body["counts"]["total"] == 17
    assert judged == ORDER[:3]
    judged.clear()
    await client.get("/", params={"limit": "2"})
    assert judged == ORDER[:2]


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"verdict": "down,broken"}, "unknown verdict 'broken'"),
        ({"region": "mars"}, "unknown region 'mars'"),
        ({"limit": "0"}, "limit must be a whole number from 1 to 1000"),
        ({"limit": "5000"}, "limit must be a whole number from 1 to 1000"),
        ({"cursor": "garbage!"}, "bad cursor"),
        ({"colour": "red"}, "unknown parameter 'colour'"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(
    client: TestClient[Any, Any], params: dict[str, str], said: str
) -> None:
    """A parameter the listing cannot honour is a JSON 400 whose message names it."""
    resp = await client.get("/api/v1/status", params=params)
    assert resp.status == 400
    assert resp.content_type == "application/json"
    assert said in (await resp.json())["error"]


async def test_openapi_declares_the_listing(client: TestClient[Any, Any]) -> None:
    """The document declares the parameters, the 400 and the counts; answers validate."""
    doc = openapi_document()
    op = doc["paths"]["/api/v1/status"]["get"]
    assert [p["name"] for p in op["parameters"]] == ["verdict", "region", "q", "limit", "cursor"]
    assert "400" in op["responses"]
    schema = doc["components"]["schemas"]["StatusResponse"]
    assert {"counts", "matching", "matched", "next_cursor"} <= set(schema["required"])
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/StatusResponse", "components": doc["components"]}
    )
    for params in ({}, {"limit": "2"}, {"region": "eu-west", "q": "w"}):
        body = await listing(client, **params)
        assert [str(e) for e in validator.iter_errors(body)] == []


# -- the status page -----------------------------------------------------------------------


async def page(client: TestClient[Any, Any], **params: str) -> str:
    resp = await client.get("/", params=params)
    assert resp.status == 200, await resp.text()
    return await resp.text()


async def test_page_shows_counts_filters_search_and_problems_first(
    client: TestClient[Any, Any],
) -> None:
    """Counts in words and symbols at the top, verdict links, a search form, problems first."""
    html = await page(client)
    assert "17 targets:</strong> ✖ 2 down · ▲ 2 degraded · ? 1 unknown · ✔ 12 up" in html
    assert '<a href="/?verdict=down,degraded,unknown">Problems: 5</a>' in html
    assert '<a href="/?verdict=down">✖ Down: 2</a>' in html
    assert '<a href="/" aria-current="page">All: 17</a>' in html
    assert '<form method=get action="/" role=search>' in html
    assert "<label for=q>" in html
    assert "name=q" in html
    rows = [part.split('"', 1)[0] for part in html.split('<tr data-target="')[1:]]
    assert rows == ORDER
    assert "<script" not in html


async def test_page_filters_and_pages_with_links(client: TestClient[Any, Any]) -> None:
    """A verdict link's page lists that verdict; the next link walks to the end."""
    html = await page(client, verdict="down,degraded,unknown")
    assert 'aria-current="page">Problems: 5</a>' in html
    assert 'data-target="svc-00"' not in html
    seen: list[str] = []
    params = {"limit": "6"}
    for _ in range(5):
        html = await page(client, **params)
        seen += [part.split('"', 1)[0] for part in html.split('<tr data-target="')[1:]]
        if "rel=next" not in html:
            break
        href = html.split("rel=next", 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
        params = {k: v[0] for k, v in parse_qs(urlsplit(href.replace("&amp;", "&")).query).items()}
        assert params["limit"] == "6"
        assert "⇤ First page" in await page(client, **params)
    assert seen == ORDER


async def test_page_search_keeps_the_verdict_filter(client: TestClient[Any, Any]) -> None:
    """Searching within a verdict filter: the form carries it; the result names the search."""
    html = await page(client, verdict="down", q="pay")
    assert '<input type=hidden name="verdict" value="down">' in html
    assert 'data-target="Payments"' in html
    assert 'data-target="api"' not in html
    assert "Showing 1 of 1 matching targets (verdict down; name containing “pay”)" in html


async def test_page_escapes_a_hostile_search(client: TestClient[Any, Any]) -> None:
    """A search echoed into the box and the links cannot break out of its attribute."""
    hostile = '"><script>alert(1)</script><a x="'
    html = await page(client, q=hostile)
    assert "<script>" not in html
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;a x=&quot;"' in html
    assert "No targets match." in html
    bad = await client.get("/", params={"verdict": "<b>x</b>"})
    assert bad.status == 400
    text = await bad.text()
    assert "<b>x</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text


async def test_page_policy_allows_its_own_form_and_nothing_more(
    client: TestClient[Any, Any],
) -> None:
    """The page may submit a form to itself only; the API still allows no form at all."""
    resp = await client.get("/")
    csp = [d.strip() for d in resp.headers["Content-Security-Policy"].split(";")]
    assert "form-action 'self'" in csp
    assert "default-src 'none'" in csp
    assert "base-uri 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert not any(d.startswith("script-src") or "unsafe" in d for d in csp)
    api = await client.get("/api/v1/status")
    assert api.headers["Content-Security-Policy"] == API_CSP
    assert "form-action 'none'" in API_CSP


async def test_page_holds_fifty_rows_and_twenty_alerts() -> None:
    """A large fleet: 50 rows a page with a link to the next, 20 alerts and a pointer to all."""
    clock = Clock()
    config = AggregatorConfig.model_validate({"regions": list(REGIONS)})
    agg = build(config, CollectorRegistry(), None, clock=clock)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    feed(agg, clock, {f"t{i:02d}": "down" if i < 30 else "up" for i in range(60)})
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        html = await page(c)
        rows = [part.split('"', 1)[0] for part in html.split('<tr data-target="')[1:]]
        assert rows == [f"t{i:02d}" for i in range(50)]
        nxt = html.split("rel=next", 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
        assert "limit" not in nxt
        assert ">Next 50 →</a>" in html
        assert html.count("▲ FIRING") == 20
        assert "<a href='/api/v1/alerts'>/api/v1/alerts</a> lists every one" in html


async def test_signing_in_keeps_the_search_and_drops_only_the_token() -> None:
    """Opening the page with ?token= and filters redirects to the same filters, token gone."""
    agg, _ = fleet_aggregator(tokens=[TOKEN])
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        signed = await c.get(
            "/", params={"q": "pay", "token": TOKEN, "verdict": "down"}, allow_redirects=False
        )
        assert signed.status == 303
        assert signed.headers["Location"] == "/?q=pay&verdict=down"
        html = await (await c.get("/", params={"q": "pay", "verdict": "down"})).text()
        assert 'data-target="Payments"' in html


# -- vigil status -----------------------------------------------------------------------------


async def vigil_status(client: TestClient[Any, Any], **kw: Any) -> tuple[int, str]:
    out = io.StringIO()
    url = str(client.make_url("/"))
    code = await asyncio.to_thread(cli_status.run, url, None, False, None, out, **kw)
    return code, out.getvalue()


async def test_vigil_status_lists_problems_then_a_summary(client: TestClient[Any, Any]) -> None:
    """By default: the problems first, then the counts; the exit code covers every target."""
    code, out = await vigil_status(client)
    assert code == cli_status.EXIT_DOWN
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TARGET", "VERDICT", "SINCE"]
    assert [line.split()[0] for line in lines[1:6]] == ORDER[:5]
    assert lines[6] == "17 targets: 2 down, 2 degraded, 1 unknown, 12 up"
    assert lines[7] == "(12 up not listed; --all lists every target)"
    assert "svc-00" not in out


async def test_vigil_status_all_walks_every_page(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--all lists every target, problems first, across pages of the API."""
    monkeypatch.setattr(cli_status, "PAGE_LIMIT", 4)
    code, out = await vigil_status(client, show_all=True)
    assert code == cli_status.EXIT_DOWN
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ORDER
    assert lines[-1] == "17 targets: 2 down, 2 degraded, 1 unknown, 12 up"


async def test_vigil_status_exit_code_counts_unlisted_targets() -> None:
    """With every target up nothing is listed, the summary says so and the exit code is 0."""
    clock = Clock()
    agg = build(
        AggregatorConfig.model_validate({"regions": list(REGIONS)}),
        CollectorRegistry(),
        None,
        clock=clock,
    )
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    feed(agg, clock, {"a": "up", "b": "up"})
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        code, out = await vigil_status(c)
        assert code == cli_status.EXIT_UP
        assert out.splitlines() == [
            "2 targets: 0 down, 0 degraded, 0 unknown, 2 up",
            "(2 up not listed; --all lists every target)",
        ]
