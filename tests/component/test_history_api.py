"""History against a real SQLite file: incidents, uptime, latency, banner, notes, restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig
from aggregator.edges.http import make_app
from tests.rulekit import REGIONS, Clock, RegionProbe, online
from wire.topics import presence_topic, result_topic

# A minute boundary, so minute buckets in the test are whole.
START = 1_790_000_040.0


def config(db: Path, **extra: Any) -> AggregatorConfig:
    return AggregatorConfig.model_validate(
        {"regions": list(REGIONS), "storage": {"path": str(db)}, **extra}
    )


def started(db: Path, clock: Clock, **extra: Any) -> Aggregator:
    """A connected aggregator past warm-up, every region's probe online for `api`."""
    agg = build(config(db, **extra), CollectorRegistry(), None, clock=clock)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    for region in REGIONS:
        presence = online(region, ("api",), clock.now)
        agg.pipeline.handle(presence_topic(region, f"{region}-1"), presence.to_json(), False)
    return agg


def run(
    agg: Aggregator,
    clock: Clock,
    probes: dict[str, RegionProbe],
    seconds: int,
    ok: dict[str, bool],
    version: str = "3.8.34",
) -> None:
    """Every region checks every 10 s for `seconds`, the aggregator ticking each second."""
    for step in range(seconds):
        clock.now += 1
        if step % 10 == 0:
            for r, p in probes.items():
                result = p.check(ok[r], clock.now, version=version)
                agg.pipeline.handle(result_topic(r, "api"), result.to_json(), False)
        agg.pipeline.tick(subscribed=True)


def close(agg: Aggregator) -> None:
    assert agg.history is not None
    assert agg.history.db.flush(10)
    agg.history.close()


def count_reads(agg: Aggregator) -> list[object]:
    """From now on, every read the history database is asked for, in order."""
    assert agg.history is not None
    asked: list[object] = []
    read = agg.history.db.read

    async def counting(fn: Any) -> Any:
        asked.append(fn)
        return await read(fn)

    agg.history.db.read = counting  # type: ignore[method-assign]
    return asked


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite"


async def get(agg: Aggregator, path: str) -> Any:
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        resp = await c.get(path)
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_outage_opens_and_closes_one_incident_with_regions_errors_versions(
    db: Path,
) -> None:
    clock = Clock(START)
    agg = started(db, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    up = dict.fromkeys(REGIONS, True)
    run(agg, clock, probes, 120, up)
    assert agg.engine.snapshot("api").verdict.value == "up"  # type: ignore[union-attr]
    run(agg, clock, probes, 60, dict.fromkeys(REGIONS, False))
    assert agg.engine.snapshot("api").verdict.value == "down"  # type: ignore[union-attr]
    run(agg, clock, probes, 60, up, version="3.8.35")
    assert agg.engine.snapshot("api").verdict.value == "up"  # type: ignore[union-attr]
    assert agg.history is not None
    agg.history.db.flush(10)

    doc = await get(agg, "/api/v1/incidents?target=api")
    assert len(doc["incidents"]) == 1
    incident = doc["incidents"][0]
    assert incident["open"] is False
    assert incident["peak"] == "down"
    assert {r["region"] for r in incident["regions"]} == set(REGIONS)
    assert all(r["first_error"].startswith("http_status") for r in incident["regions"]), incident
    assert incident["version_at_start"] == "3.8.34"
    assert incident["version_at_end"] == "3.8.35"
    # Down from the check that completed the 3rd failure to the one that completed recovery.
    assert 20 <= incident["duration_s"] <= 60, incident
    assert incident["started_at"] < incident["ended_at"]

    one = await get(agg, f"/api/v1/incidents/{incident['id']}")
    assert one["id"] == incident["id"]
    per_target = await get(agg, "/api/v1/targets/api/incidents")
    assert [i["id"] for i in per_target["incidents"]] == [incident["id"]]

    uptime = await get(agg, "/api/v1/targets/api/uptime")
    day = next(w for w in uptime["windows"] if w["window"] == "24h")
    assert day["down_s"] > 0
    assert day["up_s"] > 0
    assert 0 < day["availability"] < 1
    # Each region failed 6 of its 24 checks.
    assert day["regions"] == dict.fromkeys(sorted(REGIONS), 18 / 24)
    assert uptime["budget_left"] < 0  # 30-odd seconds down in a few minutes of history
    assert len(uptime["daily"]) == 90

    latency = await get(agg, "/api/v1/targets/api/latency?hours=1")
    assert set(latency["regions"]) == set(REGIONS)
    points = latency["regions"]["us-east"]
    assert all(abs(p["p50_ms"] - 12.0) <= 12.0 * 0.03 for p in points if p["p50_ms"]), points
    assert [d["version"] for d in latency["deploys"] if d["region"] == "us-east"] == [
        "3.8.34",
        "3.8.35",
    ]
    close(agg)


async def test_restart_keeps_incidents_uptime_and_an_open_incident(db: Path) -> None:
    clock = Clock(START)
    agg = started(db, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    run(agg, clock, probes, 90, dict.fromkeys(REGIONS, True))
    run(agg, clock, probes, 60, dict.fromkeys(REGIONS, False))
    assert agg.history is not None
    open_id = agg.history.incidents.open_for("api").id  # type: ignore[union-attr]
    agg.history.db.flush(10)
    before = await get(agg, "/api/v1/targets/api/uptime")
    close(agg)

    # A new process on the same file (its engine relearns the verdict from results).
    clock.now += 5
    again = started(db, clock)
    run(again, clock, probes, 40, dict.fromkeys(REGIONS, False))
    assert again.history is not None
    held = again.history.incidents.open_for("api")
    assert held is not None
    assert held.id == open_id
    run(again, clock, probes, 40, dict.fromkeys(REGIONS, True))
    again.history.db.flush(10)
    doc = await get(again, "/api/v1/incidents")
    assert [i["id"] for i in doc["incidents"]] == [open_id]
    assert doc["incidents"][0]["open"] is False
    after = await get(again, "/api/v1/targets/api/uptime")
    day_before = next(w for w in before["windows"] if w["window"] == "24h")
    day_after = next(w for w in after["windows"] if w["window"] == "24h")
    assert day_after["up_s"] >= day_before["up_s"] > 0
    assert day_after["down_s"] > day_before["down_s"] > 0
    close(again)


async def test_banner_and_note(db: Path) -> None:
    clock = Clock(START)
    agg = started(db, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    run(agg, clock, probes, 60, dict.fromkeys(REGIONS, False))
    assert agg.history is not None
    agg.history.db.flush(10)
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        resp = await c.post("/api/v1/announcements", json={"text": "Investigating 5xx"})
        assert resp.status == 200
        assert (await (await c.get("/api/v1/announcements")).json())["announcement"][
            "text"
        ] == "Investigating 5xx"
        resp = await c.post("/api/v1/announcements", json={"text": ""})
        assert resp.status == 400
        resp = await c.post("/api/v1/announcements", json={"txt": "x"})
        assert resp.status == 400
        resp = await c.delete("/api/v1/announcements")
        assert resp.status == 200
        assert (await (await c.get("/api/v1/announcements")).json())["announcement"] is None

        incident_id = (await (await c.get("/api/v1/incidents")).json())["incidents"][0]["id"]
        resp = await c.post(f"/api/v1/incidents/{incident_id}/note", json={"text": "bad deploy"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["note"] == "bad deploy"
        resp = await c.post("/api/v1/incidents/999/note", json={"text": "x"})
        assert resp.status == 404
    # The note survives the incident's later updates (it closes here) and a restart.
    run(agg, clock, probes, 40, dict.fromkeys(REGIONS, True))
    close(agg)
    again = started(db, clock)
    doc = await get(again, f"/api/v1/incidents/{incident_id}")
    assert doc["note"] == "bad deploy"
    assert doc["open"] is False
    close(again)


async def test_history_off_says_so() -> None:
    clock = Clock(START)
    agg = build(AggregatorConfig(regions=list(REGIONS)), CollectorRegistry(), None, clock=clock)
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        resp = await c.get("/api/v1/incidents")
        assert resp.status == 404
        assert "storage.path" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("listen", "tokens", "allowed"),
    [
        ("127.0.0.1:8080", [], True),  # only this machine reaches it
        ("0.0.0.0:8080", [], False),  # anyone reaching the port could silence pages
        ("0.0.0.0:8080", ["tok-1"], True),  # with the token
    ],
)
async def test_changes_need_a_token_unless_only_this_machine_can_ask(
    db: Path, listen: str, tokens: list[str], allowed: bool
) -> None:
    clock = Clock(START)
    agg = build(
        config(db, listen=listen, api={"tokens": tokens}), CollectorRegistry(), None, clock=clock
    )
    headers = {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        for method, path, body in (
            ("POST", "/api/v1/announcements", {"text": "x"}),
            ("DELETE", "/api/v1/announcements", None),
            ("POST", "/api/v1/maintenance", {"target": "api", "duration_s": 60, "reason": "r"}),
        ):
            resp = await c.request(method, path, json=body, headers=headers)
            expected = (200, 201) if allowed else (403,)
            assert resp.status in expected, (method, path, await resp.text())
        # Reading never needed it.
        resp = await c.get("/api/v1/announcements", headers=headers)
        assert resp.status == 200
    close(agg)


async def test_retained_results_are_not_counted_again(db: Path) -> None:
    """A retained result is the last one a previous process counted: not a new check."""
    clock = Clock(START)
    agg = started(db, clock)
    probe = RegionProbe("us-east", successes=1)
    retained = probe.check(True, clock.now)
    agg.pipeline.handle(result_topic("us-east", "api"), retained.to_json(), True)
    live = probe.check(True, clock.now + 1)
    agg.pipeline.handle(result_topic("us-east", "api"), live.to_json(), False)
    assert agg.history is not None
    opened = agg.history.rollups
    clock.now += 120
    agg.pipeline.tick(subscribed=True)
    regions = opened.open_regions("api", ["us-east"])
    assert [(tier.label, b.checks) for (tier, _r), (_s, b) in sorted(regions.items())] == [
        ("hour", 1),
        ("day", 1),
    ]
    close(agg)


async def test_badges_of_unknown_targets_are_404_and_ask_the_database_nothing(db: Path) -> None:
    clock = Clock(START)
    agg = started(db, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    run(agg, clock, probes, 70, dict.fromkeys(REGIONS, True))
    assert agg.history is not None
    asked = count_reads(agg)
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
        resp = await c.get("/badge/no-such-target/uptime.svg")
        assert resp.status == 404
        assert asked == []
        for _ in range(3):  # asked often, built once a minute
            resp = await c.get("/badge/api/uptime.svg?window=24h")
            assert resp.status == 200
            assert "%" in await resp.text()
        assert len(asked) == 1
    close(agg)


async def test_five_down_minutes_burn_the_budget_at_its_whole_rate_and_are_sev1(
    db: Path,
) -> None:
    """Five closed minutes all down: the 5 m burn rate is 1/(1-slo), and that is SEV-1."""
    clock = Clock(START)
    agg = started(db, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    run(agg, clock, probes, 600, dict.fromkeys(REGIONS, True))
    assert agg.history is not None
    before = await get(agg, "/api/v1/targets/api/uptime")
    assert before["burn_rate_5m"] == 0.0
    assert before["severity"] is None
    # Down within 30 s (3 failures 10 s apart), then 5 whole minutes and a little more.
    run(agg, clock, probes, 60 + 5 * 60 + 10, dict.fromkeys(REGIONS, False))
    assert agg.engine.snapshot("api").verdict.value == "down"  # type: ignore[union-attr]
    assert agg.history.db.flush(10)
    doc = await get(agg, "/api/v1/targets/api/uptime")
    slo = doc["slo"]
    assert slo == 0.999
    assert doc["burn_rate_5m"] == pytest.approx(1 / (1 - slo), rel=1e-9)
    # The hour holds the 10 up minutes too: it burns, but slower.
    assert 2.0 <= doc["burn_rate_1h"] < doc["burn_rate_5m"]
    assert doc["burn_thresholds"] == {"sev1_5m": 6.0, "sev2_1h": 2.0}
    assert doc["severity"] == "SEV-1"
    close(agg)


async def test_the_uptime_badge_of_a_target_with_history_but_no_live_verdict(db: Path) -> None:
    """A target known only from its history has an uptime badge; one with neither is 404."""
    clock = Clock(START)
    agg = started(db, clock)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    run(agg, clock, probes, 180, dict.fromkeys(REGIONS, True))
    close(agg)
    # A new process on the same file that has not heard of `api` (yet).
    clock.now += 5
    again = build(config(db), CollectorRegistry(), None, clock=clock)
    assert again.engine.snapshot("api") is None
    assert again.history is not None
    asked = count_reads(again)
    async with TestClient(TestServer(make_app(again.http_deps()), host="127.0.0.1")) as c:
        resp = await c.get("/badge/api/uptime.svg?window=24h")
        assert resp.status == 200, await resp.text()
        assert "100.00% 24h" in await resp.text()
        assert len(asked) == 1
        # The status badge shows the live verdict only: there is none.
        assert (await c.get("/badge/api/status.svg")).status == 404
        resp = await c.get("/badge/no-such-target/uptime.svg")
        assert resp.status == 404
        assert len(asked) == 1  # a name with neither costs no query
    close(again)
