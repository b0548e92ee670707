"""With API tokens set, badges and /public are token-free only when configured so."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.app import Aggregator
from aggregator.edges.http import make_app
from tests.component.test_history_api import run, started
from tests.rulekit import REGIONS, Clock, RegionProbe

START = 1_790_000_040.0
TOKEN = "tok-public-test"
VERSION = "9.4.17-rc3"
ERROR = "db down"  # part of the failing probe's error text

PUBLIC = ("/badge/api/status.svg", "/badge/api/uptime.svg?window=24h", "/public")
BADGES = PUBLIC[:2]
# Never token-free, whatever the public flags say.
PRIVATE = (
    "/",
    "/targets/api",
    "/api/v1/status",
    "/api/v1/targets/api",
    "/api/v1/targets/api/uptime",
    "/api/v1/incidents",
    "/api/v1/announcements",
)


def outage(db: Path, *, public_badges: bool, public_page: bool) -> Aggregator:
    """An aggregator with tokens set, after `api` was up, then down (its outage still open)."""
    clock = Clock(START)
    api = {"tokens": [TOKEN], "public_badges": public_badges, "public_page": public_page}
    agg = started(db, clock, api=api)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    run(agg, clock, probes, 90, dict.fromkeys(REGIONS, True), version=VERSION)
    run(agg, clock, probes, 90, dict.fromkeys(REGIONS, False), version=VERSION)
    assert agg.engine.snapshot("api").verdict.value == "down"  # type: ignore[union-attr]
    assert agg.history is not None
    assert agg.history.db.flush(10)
    return agg


@pytest.mark.parametrize("public_page", [False, True])
@pytest.mark.parametrize("public_badges", [False, True])
async def test_public_flags_open_only_their_own_routes(
    tmp_path: Path, public_badges: bool, public_page: bool
) -> None:
    """Badges and /public answer 401 without a token unless their flag is on; the rest always."""
    agg = outage(tmp_path / "history.sqlite", public_badges=public_badges, public_page=public_page)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        for path in PUBLIC:
            is_open = public_page if path == "/public" else public_badges
            resp = await c.get(path)
            assert resp.status == (200 if is_open else 401), (path, await resp.text())
            # With the token it is always served.
            assert (await c.get(path, headers=bearer)).status == 200, path
        for path in PRIVATE:
            resp = await c.get(path, allow_redirects=False)
            assert resp.status == 401, (path, await resp.text())
            assert (await c.get(path, headers=bearer)).status == 200, path
    assert agg.history is not None
    agg.history.close()


async def test_public_page_shows_the_outage_without_versions_or_errors(tmp_path: Path) -> None:
    """The public page has the verdict and the incident, but no version, error text or region."""
    agg = outage(tmp_path / "history.sqlite", public_badges=False, public_page=True)
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        resp = await c.get("/public")
        assert resp.status == 200
        html = await resp.text()
        # The operator's page, signed in, does show both: they are there to leak.
        operator = await c.get("/targets/api", headers={"Authorization": f"Bearer {TOKEN}"})
        inside = await operator.text()
    assert VERSION in inside
    assert ERROR in inside
    assert "DOWN" in html
    assert "<td>api</td>" in html  # the incident's row
    assert VERSION not in html
    assert ERROR not in html
    assert "http_status" not in html
    assert "503" not in html
    for region in REGIONS:
        assert region not in html
    assert agg.history is not None
    agg.history.close()
