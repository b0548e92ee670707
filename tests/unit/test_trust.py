"""The rule engine under a misbehaving world: skewed clocks, a lost broker, a cold start."""

from __future__ import annotations

from aggregator.config import Rule
from aggregator.core.alerts import AlertBook, AlertSettings, desired_alerts
from aggregator.core.rules import PRESENCE_SETTLE_S, Engine
from runtime.clock import rfc3339
from tests.rulekit import BOOT, REGIONS, T0, RegionProbe, engine, names, online, verdict
from wire.result import Presence, ProbeResult
from wire.state import Verdict

SETTINGS = AlertSettings()


def shifted(result: ProbeResult, by: float) -> ProbeResult:
    """The result as a probe whose clock is `by` seconds off would stamp it."""
    return result.model_copy(
        update={"started_at": result.started_at + by, "scheduled_at": result.scheduled_at + by}
    )


def alertnames(e: Engine, now: float) -> list[str]:
    return sorted(a.labels["alertname"] for a in desired_alerts(e, now, SETTINGS).values())


def offline(region: str, at: float) -> Presence:
    return Presence(status="offline", probe_id=f"{region}-1", region=region, boot_id=BOOT, at=at)


def test_a_probe_clock_behind_never_makes_its_region_stale() -> None:
    """A probe 2.5 s behind at a 1 s interval stays fresh: staleness follows arrival."""
    e = engine(Rule(failures=3, recoveries=2))
    probes = {r: RegionProbe(r, interval=1.0) for r in REGIONS}
    stale_seen = []
    for i in range(40):  # 40 s of a real outage, every probe 2.5 s behind
        now = T0 + i
        for p in probes.values():
            e.apply_result(shifted(p.check(False, now), -2.5), now + 0.01)
        out = e.evaluate("api", now + 0.5)
        stale_seen += [t for t in names(out) if t.startswith("stale")]
    assert verdict(e) is Verdict.DOWN
    assert stale_seen == []


def test_an_old_result_is_stale_however_it_arrives() -> None:
    """A result ended long ago (retained, or queued) counts from its own end, not its arrival."""
    e = engine(Rule(stale_after=30, recoveries=1))
    old = RegionProbe("us-east").check(True, T0)
    e.apply_result(old, T0 + 3600)  # delivered an hour later
    assert "us-east" in e.judge("api", T0 + 3600).stale


def test_a_probe_clock_ahead_gives_startsat_no_later_than_now() -> None:
    """A probe 25 s ahead cannot push an alert's start past the moment it is built."""
    e = engine()
    eu = RegionProbe("eu-west")
    for i in range(3):
        now = T0 + 10 * i
        e.apply_result(shifted(eu.check(False, now), 25.0), now)
        for r in ("us-east", "ap-southeast"):
            e.apply_result(RegionProbe(r, successes=1).check(True, now), now)
    e.evaluate("api", T0 + 20)
    [alert] = desired_alerts(e, T0 + 20, SETTINGS).values()
    assert alert.labels["alertname"] == "ServiceRegionDown"
    book = AlertBook(60.0)
    [firing] = book.update({alert.fingerprint: alert}, T0 + 20)
    [resolved] = book.update({}, T0 + 21)  # resolved a second later: endsAt is T0 + 21
    for payload in (firing, resolved):
        assert payload["startsAt"] <= payload["endsAt"]
        assert payload["startsAt"] <= rfc3339(T0 + 20)  # never the probe's future


def outage(e: Engine) -> float:
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    for i in range(3):
        now = T0 + 10 * i
        for p in probes.values():
            e.apply_result(p.check(False, now), now)
    e.evaluate("api", T0 + 20)
    assert verdict(e) is Verdict.DOWN
    return T0 + 20


def test_cut_off_from_the_broker_nothing_goes_stale_or_resolves() -> None:
    """While the aggregator is cut off, and a grace after, an outage stays down with its since."""
    e = engine()
    now = outage(e)
    since = e.snapshot("api").since  # type: ignore[union-attr]
    e.cut_off(now + 1)
    for later in (now + 31, now + 120, now + 600):  # far past stale_after (30 s)
        assert names(e.evaluate("api", later)) == []
        assert alertnames(e, later) == ["ServiceDown"]
    e.reconnected(now + 600, grace=20)
    assert names(e.evaluate("api", now + 610)) == []  # within the grace: still held
    out = names(e.evaluate("api", now + 621))  # grace over and nobody spoke: now it is news
    assert "verdict:down->unknown" in out
    assert e.snapshot("api").since != since  # type: ignore[union-attr]


def test_a_broker_shutdown_sending_every_last_will_is_not_probes_going_offline() -> None:
    """`offline` for every probe just before the cut is the broker's doing: no region stale."""
    e = engine()
    now = outage(e)
    for r in REGIONS:
        e.apply_presence(offline(r, now), now)
    e.cut_off(now + 0.2)
    for later in (now + 1, now + PRESENCE_SETTLE_S + 1, now + 25):
        assert names(e.evaluate("api", later)) == []
        assert alertnames(e, later) == ["ServiceDown"]
        assert not any(e.region_stale(r, later) for r in REGIONS)


def test_a_real_offline_counts_once_settled() -> None:
    """With the broker up, a probe's `offline` makes its region stale after the settle time."""
    e = engine()
    now = outage(e)
    e.apply_presence(offline("us-east", now), now)
    assert not e.region_stale("us-east", now + 1)
    assert e.region_stale("us-east", now + PRESENCE_SETTLE_S + 0.1)


def test_no_probe_offline_before_the_aggregator_could_have_heard() -> None:
    """At start, a region whose first result has not come yet is pending, not offline."""
    e = engine()
    e.listening(T0)
    e.apply_presence(online("us-east"), T0)
    e.evaluate("api", T0 + 5)
    assert alertnames(e, T0 + 5) == []
    ev = e.judge("api", T0 + 5)
    assert ev.pending == frozenset(REGIONS)
    assert verdict(e) is Verdict.UNKNOWN
    e.evaluate("api", T0 + 31)  # 3 x 10 s of listening and still nothing: that is news
    assert "ProbeOffline" in alertnames(e, T0 + 31)


def sent_alerts(pattern: dict[str, str]) -> list[tuple[str, str, str]]:
    """Feed each region's pattern, a round every 10 s; every (alertname, region, status) sent.

    Judged once per round, as when the regions' results arrive close together.
    """
    e = engine()
    book = AlertBook(resend_interval=3600)
    probes = {r: RegionProbe(r, successes=1) for r in pattern}
    sent = []
    for i in range(max(len(p) for p in pattern.values())):
        now = T0 + 10 * i
        for region, p in pattern.items():
            if i < len(p):
                e.apply_result(probes[region].check(p[i] == "S", now), now)
        e.evaluate("api", now)
        for payload in book.update(desired_alerts(e, now, SETTINGS), now):
            status = "resolved" if payload["endsAt"] <= rfc3339(now) else "firing"
            labels = payload["labels"]
            sent.append((labels["alertname"], labels.get("region", ""), status))
    return sent


def test_a_full_outage_that_heals_raises_no_regional_alert() -> None:
    """Down then healed, region by region: ServiceDown fires and resolves, nothing else."""
    sent = sent_alerts({"us-east": "FFFSSS", "eu-west": "FFFFSS", "ap-southeast": "FFFSSS"})
    assert sent == [("ServiceDown", "", "firing"), ("ServiceDown", "", "resolved")]


def test_one_region_failing_and_healing_fires_and_resolves_once() -> None:
    """One region's outage: exactly one ServiceRegionDown, fired then resolved."""
    sent = sent_alerts({"us-east": "FFFFSSS", "eu-west": "SSSSSSS", "ap-southeast": "SSSSSSS"})
    assert sent == [
        ("ServiceRegionDown", "us-east", "firing"),
        ("ServiceRegionDown", "us-east", "resolved"),
    ]


def test_region_alert_text_names_every_failing_region() -> None:
    """With two regions failing, each regional alert says two of three fail, and which."""
    e = engine()
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    for i in range(3):
        now = T0 + 10 * i
        for r in ("us-east", "eu-west"):
            e.apply_result(probes[r].check(False, now), now)
        e.apply_result(probes["ap-southeast"].check(True, now), now)
    e.evaluate("api", T0 + 20)
    summaries = sorted(
        a.annotations["summary"] for a in desired_alerts(e, T0 + 20, SETTINGS).values()
    )
    assert summaries == [
        "api is failing from eu-west (2 of 3 failing: eu-west, us-east)",
        "api is failing from us-east (2 of 3 failing: eu-west, us-east)",
    ]


def with_interval(result: ProbeResult, interval: float) -> ProbeResult:
    return result.model_copy(update={"interval": interval})


def test_the_interval_each_result_carries_beats_any_guess() -> None:
    """Results 2 s apart from a probe at a 10 s interval (a quick confirm) keep stale_after 30 s."""
    e = engine()
    p = RegionProbe("us-east", successes=1)
    for at in (T0, T0 + 2, T0 + 4):
        e.apply_result(with_interval(p.check(True, at), 10.0), at)
    assert e.interval("api", "us-east") == 10.0
    assert "us-east" not in e.judge("api", T0 + 4 + 25).stale  # 25 s < 3 x 10 s


def test_failing_since_after_a_restart_uses_the_probes_interval() -> None:
    """A region first seen at its third failure dates the outage back by the probe's interval."""
    e = engine()
    p = RegionProbe("us-east", interval=60.0)
    results = [with_interval(p.check(False, T0 + 60 * i), 60.0) for i in range(3)]
    e.apply_result(results[-1], T0 + 120)  # a restarted aggregator sees only the latest
    view = e.snapshot("api").regions["us-east"]  # type: ignore[union-attr]
    assert view.failing_since == T0


def test_a_forged_high_seq_does_not_mute_a_region() -> None:
    """After a forged seq of 2^63-1, the probe's own next result (newer by time) still counts."""
    e = engine()
    p = RegionProbe("us-east", successes=1)
    e.apply_result(p.check(True, T0), T0)
    forged = p.check(True, T0 + 1).model_copy(update={"seq": 2**63 - 1})
    e.apply_result(forged, T0 + 1)
    for i in range(3):  # the real probe goes on with its own seq, and the target fails
        at = T0 + 10 * (i + 1)
        assert e.apply_result(p.check(False, at), at).value == "applied"
    view = e.snapshot("api").regions["us-east"]  # type: ignore[union-attr]
    assert view.failing


def test_a_region_alert_waits_region_down_for() -> None:
    """ServiceRegionDown waits region_down_for, so a full outage's descent raises none."""
    e = engine()
    settings = AlertSettings(region_down_for=30.0)
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    seen: dict[float, list[str]] = {}
    for i in range(19):  # every 2 s for 36 s: us-east failing alone from T0 on
        at = T0 + 2 * i
        for r, p in probes.items():
            e.apply_result(with_interval(p.check(r != "us-east", at), 10.0), at)
        e.evaluate("api", at)
        seen[at] = sorted(desired_alerts(e, at, settings))
    assert verdict(e) is Verdict.DEGRADED
    assert all(not names for at, names in seen.items() if at < T0 + 30)
    [alert] = desired_alerts(e, T0 + 36, settings).values()
    assert alert.labels["alertname"] == "ServiceRegionDown"
    assert alert.starts_at == T0  # when it began failing, not when the delay ran out


def test_a_flapping_broker_connection_cannot_hold_staleness_forever() -> None:
    """Cut 1 s in every 15 s, a dead probe's region still goes stale and the outage goes down."""
    e = engine()
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    connected = True
    for t in range(1, 301):
        now = T0 + t
        if t % 15 == 0:
            e.cut_off(now)
            connected = False
        elif t % 15 == 1 and not connected:
            e.reconnected(now, grace=20.0)
            connected = True
        if connected and t % 10 == 0:
            for r, p in probes.items():
                if r != "us-east" or t < 30:  # us-east's probe dies at 30 s
                    e.apply_result(with_interval(p.check(r == "us-east" or t < 60, now), 10.0), now)
        if "api" in e:
            e.evaluate("api", now)
    ev = e.judge("api", T0 + 300)
    assert ev.stale == {"us-east"}
    assert verdict(e) is Verdict.DOWN  # on a degraded quorum


def test_the_hold_lasts_until_probes_that_reconnect_late_are_heard() -> None:
    """Regions heard from again during the grace are fresh; one never heard goes stale after."""
    e = engine()
    now = outage(e)
    e.cut_off(now + 1)
    e.reconnected(now + 60, grace=50.0)
    late = RegionProbe("eu-west", successes=0, failures=3, seq=3)
    e.apply_result(late.check(False, now + 85), now + 85)  # 25 s after the reconnect
    assert names(e.evaluate("api", now + 100)) == []  # within the grace: still down
    assert verdict(e) is Verdict.DOWN


def test_a_region_with_only_inconclusive_news_does_not_hide_an_outage() -> None:
    """A probe that can only say inconclusive goes stale, so two failing regions are down."""
    e = engine()
    probes = {r: RegionProbe(r, successes=1) for r in REGIONS}
    for i in range(12):
        now = T0 + 10 * i
        for r, p in probes.items():
            result = with_interval(p.check(r == "us-east", now), 10.0)
            if r == "us-east" and i > 0:
                doc = result.model_dump(by_alias=True)
                doc.update(ok=False, error_kind="internal", inconclusive=True)
                result = ProbeResult.model_validate(doc)
            e.apply_result(result, now)
        e.evaluate("api", now)
    assert verdict(e) is Verdict.DOWN
    assert e.judge("api", T0 + 110).stale == {"us-east"}


def test_region_down_for_counts_from_turning_failing_not_from_the_first_failure() -> None:
    """A region whose streak began long ago but that turned failing just now waits its turn."""
    e = engine()
    settings = AlertSettings(region_down_for=30.0)
    us = RegionProbe("us-east", successes=1)
    others = [RegionProbe(r, successes=1) for r in ("eu-west", "ap-southeast")]
    for at in (T0, T0 + 12.5, T0 + 25):  # hung checks: each failure a timeout later
        e.apply_result(with_interval(us.check(False, at), 10.0), at)
        for p in others:
            e.apply_result(with_interval(p.check(True, at), 10.0), at)
    e.evaluate("api", T0 + 31)
    assert desired_alerts(e, T0 + 31, settings) == {}  # failing for 6 s, not 31


def test_a_region_failing_on_after_a_full_outage_alerts_once_not_per_result() -> None:
    """Intermittent failures after an outage heals: one ServiceRegionDown, held, no flapping."""
    e = engine()
    now = outage(e)
    book = AlertBook(resend_interval=3600)
    probes = {r: RegionProbe(r, successes=0, failures=3, seq=3) for r in REGIONS}
    statuses = []
    pattern = "SFSFSFSFSFSF"
    for i, c in enumerate(pattern):
        at = now + 10 * (i + 1)
        for r, p in probes.items():
            e.apply_result(with_interval(p.check(r != "us-east" or c == "S", at), 10.0), at)
        e.evaluate("api", at)
        for payload in book.update(desired_alerts(e, at, AlertSettings(region_down_for=30)), at):
            if payload["labels"]["alertname"] == "ServiceRegionDown":
                statuses.append("resolved" if payload["endsAt"] <= rfc3339(at) else "firing")
    assert statuses == ["firing"]


def test_a_flapping_region_is_judged_after_n_plus_k_results_not_pending_forever() -> None:
    """Checks alternating pass and fail reach neither streak, yet after N + K results count."""
    e = engine()
    probes = {r: RegionProbe(r) for r in REGIONS}
    for i in range(6):
        now = T0 + 10 * i
        for p in probes.values():
            e.apply_result(with_interval(p.check(i % 2 == 0, now), 10.0), now)
        e.evaluate("api", now)
    assert e.judge("api", T0 + 50).pending == frozenset()
    assert verdict(e) is Verdict.UP
