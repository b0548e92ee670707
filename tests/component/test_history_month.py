"""A simulated month through the real pipeline: availability arithmetic exact to the second.

One aggregator (`build`, a real SQLite file, a fake clock) hears three probes check `api`
every 120 s for 30 days, with scripted outages. The rule is made instant (`failures: 1`,
`recoveries: 1`, `stale_after: 180s`) and every check lands on a scripted edge, so each
scripted outage turns the verdict at the very check that starts or ends it: no detection
delay, except going `unknown`, which the rule places one tick after the silence began (see
`SILENT`). The uptime API must then give these times to the second. The month runs twice:
with `slo.count_maintenance` off (the default: down time in a maintenance window is left out)
and on (it counts as down).
"""

from __future__ import annotations

import asyncio
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

DAY = 86_400
HOUR = 3_600
MIN = 60
# A UTC midnight: day 0 of the simulated month.
D0 = 1_789_948_800
assert D0 % DAY == 0
EAST, WEST, SOUTH = "us-east", "eu-west", "ap-southeast"
# Every probe checks (and the aggregator ticks) this often; every scripted time is a multiple.
CHECK = 120
STALE_AFTER = 180


def at(day: int, hh: int, mm: int = 0) -> int:
    return D0 + day * DAY + hh * HOUR + mm * MIN


# The last tick: day 29, 23:54. The 90d window is days -60..29 (today included; nothing was
# recorded before day 0), 30d days 0..29, 7d days 23..29, 24h the hours 00..23 of day 29; each
# ends at 23:54. The open hour and day are written only every 15 minutes (a checkpoint for a
# restart), so the last ones in the file lag; the API adds the open buckets held in memory, and
# so is exact up to the last tick.
END = at(29, 23, 54)
# (start, end, failing regions): each check in [start, end) fails in those regions.
FAILURES: list[tuple[int, int, frozenset[str]]] = [
    # Day 3, 02:00-04:00: all regions fail -> down 7200 s.
    (at(3, 2), at(3, 4), frozenset(REGIONS)),
    # Day 10, 12:00-12:30: one region fails -> degraded 1800 s (the quorum of 3 is not met).
    (at(10, 12), at(10, 12, 30), frozenset({EAST})),
    # Day 20, 10:00-11:00: all fail, inside the maintenance window below -> maintenance 3600 s.
    (at(20, 10), at(20, 11), frozenset(REGIONS)),
    # Day 29, 20:00-20:10: one region -> degraded 600 s; 22:00-22:06 all -> down 360 s.
    (at(29, 20), at(29, 20, 10), frozenset({WEST})),
    (at(29, 22), at(29, 22, 6), frozenset(REGIONS)),
]
WINDOW = (at(20, 9, 30), at(20, 11, 30))
# Day 25, 06:00-09:00: no probe says anything. The last results came at 05:58; the tick at
# 06:00 sees them 120 s old (fresh), the tick at 06:02 240 s old (> stale_after 180 s):
# unknown from 06:02. At 09:00 results come back and the verdict is up at once: unknown for
# 3 h less one check interval.
SILENT = (at(25, 6), at(25, 9))
UNKNOWN_S = 3 * HOUR - CHECK

# Each window's [start, end): whole hours (24h) or whole UTC days, the current one included.
RANGES = {
    "24h": (at(29, 0), at(30, 0)),
    "7d": (at(23, 0), at(30, 0)),
    "30d": (at(0, 0), at(30, 0)),
    "90d": (at(-60, 0), at(30, 0)),
}
# Judged (or unknown) time: from the first check (day 0, 00:00) to END.
TOTAL_30D = END - D0
TOTAL_90D = TOTAL_30D  # the 60 days before day 0 have no rows: a gap, not downtime
TOTAL_7D = END - at(23, 0)
TOTAL_24H = END - at(29, 0)


def split(
    total: int, down: int, degraded: int, maint: int, unknown: int, count_maintenance: bool
) -> dict[str, float]:
    up = total - down - degraded - maint - unknown
    # Counted, maintenance is down time; else it is left out on both sides, as unknown is.
    judged_down = down + (maint if count_maintenance else 0)
    return {
        "up_s": up,
        "degraded_s": degraded,
        "down_s": down,
        "maintenance_s": maint,
        "unknown_s": unknown,
        "availability": (up + degraded) / (up + degraded + judged_down),
    }


def expected(count_maintenance: bool) -> dict[str, dict[str, float]]:
    """Each window's split, with maintenance counted as down or left out."""
    c = count_maintenance
    month = {"down": 7200 + 360, "degraded": 1800 + 600, "maint": 3600, "unknown": UNKNOWN_S}
    return {
        "24h": split(TOTAL_24H, down=360, degraded=600, maint=0, unknown=0, count_maintenance=c),
        "7d": split(
            TOTAL_7D, down=360, degraded=600, maint=0, unknown=UNKNOWN_S, count_maintenance=c
        ),
        "30d": split(TOTAL_30D, **month, count_maintenance=c),
        "90d": split(TOTAL_90D, **month, count_maintenance=c),
    }


EXPECTED = {count: expected(count) for count in (False, True)}
WINDOWS = sorted(EXPECTED[False])


def n(seconds: int) -> int:
    """Checks in a span of `seconds`."""
    return seconds // CHECK


# Checks per region in each window: one per CHECK up to END, the last one (23:54) still in
# the open minute, none while silent. Failures as scripted above.
CHECKS = {
    "24h": n(TOTAL_24H),
    "7d": n(TOTAL_7D) - n(3 * HOUR),
    "30d": n(TOTAL_30D) - n(3 * HOUR),
    "90d": n(TOTAL_90D) - n(3 * HOUR),
}
_DAY29 = {EAST: n(360), WEST: n(600) + n(360), SOUTH: n(360)}
_MONTH = {
    EAST: n(7200) + n(1800) + n(3600) + _DAY29[EAST],
    WEST: n(7200) + n(3600) + _DAY29[WEST],
    SOUTH: n(7200) + n(3600) + _DAY29[SOUTH],
}
REGION_FAILURES = {"24h": _DAY29, "7d": _DAY29, "30d": _MONTH, "90d": _MONTH}


def failing(t: int) -> frozenset[str]:
    return frozenset().union(*(regions for s, e, regions in FAILURES if s <= t < e))


def simulate(db: Path, count_maintenance: bool) -> Aggregator:
    """Run the month; return the aggregator with every write done."""
    config = AggregatorConfig.model_validate(
        {
            "regions": list(REGIONS),
            "storage": {"path": str(db)},
            "rule": {
                "failures": 1,
                "recoveries": 1,
                "regions": 3,
                "min_regions": 2,
                "stale_after": STALE_AFTER,
            },
            # The silence must not make the engine forget the target.
            "forget_after": "7d",
            "slo": {"count_maintenance": count_maintenance},
        }
    )
    clock = Clock(D0 - 120.0)
    agg = build(config, CollectorRegistry(), None, clock=clock)
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    clock.now += 2
    agg.pipeline.tick(subscribed=True)
    for region in REGIONS:
        presence = online(region, ("api",), clock.now, interval=float(CHECK))
        agg.pipeline.handle(presence_topic(region, f"{region}-1"), presence.to_json(), False)
    assert agg.history is not None
    agg.history.add_window("api", WINDOW[0], WINDOW[1], "db migration", {}, {})
    probes = {r: RegionProbe(r, successes=1, interval=float(CHECK)) for r in REGIONS}
    for t in range(D0, END + 1, CHECK):
        clock.now = float(t)
        # The tick first: it closes the minute before, so this minute's checks land in it.
        agg.pipeline.tick(subscribed=True)
        if SILENT[0] <= t < SILENT[1]:
            continue
        bad = failing(t)
        for r, p in probes.items():
            result = p.check(r not in bad, float(t))
            agg.pipeline.handle(result_topic(r, "api"), result.to_json(), False)
    assert agg.history.db.flush(30)
    assert agg.history.db.write_errors == 0
    return agg


@pytest.fixture(
    scope="module", params=[False, True], ids=["maintenance_left_out", "maintenance_counted"]
)
def month(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    count_maintenance: bool = request.param
    agg = simulate(tmp_path_factory.mktemp("month") / "history.sqlite", count_maintenance)

    async def fetch() -> dict[str, Any]:
        async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as c:
            uptime = await c.get("/api/v1/targets/api/uptime")
            assert uptime.status == 200, await uptime.text()
            incidents = await c.get("/api/v1/incidents?target=api")
            assert incidents.status == 200, await incidents.text()
            return {
                "uptime": await uptime.json(),
                "incidents": await incidents.json(),
                "count_maintenance": count_maintenance,
            }

    docs = asyncio.run(fetch())
    assert agg.history is not None
    agg.history.close()
    return docs


def test_every_window_is_served(month: dict[str, Any]) -> None:
    """The uptime API answers each window checked here, and no other."""
    assert sorted(w["window"] for w in month["uptime"]["windows"]) == WINDOWS


@pytest.mark.parametrize("window", WINDOWS)
def test_window_times_and_availability_are_exact(month: dict[str, Any], window: str) -> None:
    """Each window's up/degraded/down/maintenance/unknown seconds match the script exactly."""
    doc = next(w for w in month["uptime"]["windows"] if w["window"] == window)
    assert (doc["start"], doc["end"]) == RANGES[window]
    want = EXPECTED[month["count_maintenance"]][window]
    got = {k: doc[k] for k in want}
    assert got == pytest.approx(want, abs=1e-9, rel=1e-12), (window, got, want)


@pytest.mark.parametrize("window", sorted(CHECKS))
def test_region_availability_is_checks_passed_over_checks(
    month: dict[str, Any], window: str
) -> None:
    """Each region's availability is its passed checks over its checks in the window."""
    doc = next(w for w in month["uptime"]["windows"] if w["window"] == window)
    n = CHECKS[window]
    want = {r: (n - f) / n for r, f in REGION_FAILURES[window].items()}
    assert doc["regions"] == pytest.approx(want, rel=1e-12)


def test_slo_window_budget_and_daily_bar(month: dict[str, Any]) -> None:
    """The 30-day SLO figures follow from the 30d split; days with no data are None."""
    uptime = month["uptime"]
    counted = month["count_maintenance"]
    availability = EXPECTED[counted]["30d"]["availability"]
    assert uptime["availability_slo_window"] == pytest.approx(availability, rel=1e-12)
    assert uptime["budget_left"] == pytest.approx(1 - (1 - availability) / (1 - 0.999), rel=1e-9)
    daily = uptime["daily"]
    assert len(daily) == 90
    assert daily[-1]["day"] == at(29, 0)
    assert [d["day"] for d in daily] == [at(29, 0) - (89 - i) * DAY for i in range(90)]
    # Before day 0 nothing was recorded: no bar, not a perfect one.
    assert [d["availability"] for d in daily[:60]] == [None] * 60
    want = [1.0] * 30
    want[3] = (DAY - 7200) / DAY  # degraded and unknown days stay 1.0
    if counted:  # and maintenance days too, unless maintenance counts
        want[20] = (DAY - 3600) / DAY
    want[29] = (TOTAL_24H - 360) / TOTAL_24H
    assert [d["availability"] for d in daily[60:]] == pytest.approx(want, rel=1e-12)


def test_incidents_of_the_month(month: dict[str, Any]) -> None:
    """Each scripted outage is one incident with its times and peak; maintenance is marked."""
    got = sorted(
        (i["started_at"], i["ended_at"], i["peak"], i["maintenance"])
        for i in month["incidents"]["incidents"]
    )
    assert got == [
        (at(3, 2), at(3, 4), "down", False),
        (at(10, 12), at(10, 12, 30), "degraded", False),
        (at(20, 10), at(20, 11), "down", True),
        (at(29, 20), at(29, 20, 10), "degraded", False),
        (at(29, 22), at(29, 22, 6), "down", False),
    ]
