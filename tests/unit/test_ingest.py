"""Decoding MQTT messages: every rejection reason, and what passes."""

from __future__ import annotations

import json

import pytest

from aggregator.core.ingest import Reason, Rejected, decode
from tests.rulekit import REGIONS, T0, RegionProbe
from wire.result import MAX_PRESENCE_BYTES, MAX_RESULT_BYTES, Presence, ProbeResult
from wire.state import StateRecord, Verdict

NOW = T0 + 100
GOOD = RegionProbe("us-east").check(True, T0).to_json()
TOPIC = "vigil/v1/results/us-east/api"


def run(topic: str, payload: bytes) -> object:
    return decode(topic, payload, regions=frozenset(REGIONS), now=NOW, max_skew=30)


def doc(**changes: object) -> bytes:
    d = json.loads(GOOD)
    d.update(changes)
    return json.dumps(d).encode()


def test_good_result_passes() -> None:
    """A valid result on its own topic decodes to the model."""
    assert isinstance(run(TOPIC, GOOD), ProbeResult)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b"\x00\xffnot json", Reason.INVALID_JSON),
        (TOPIC, b"", Reason.INVALID_JSON),
        (TOPIC, doc(schema="vigil.result/v9"), Reason.SCHEMA),
        (TOPIC, b" " * (MAX_RESULT_BYTES + 1), Reason.TOO_LARGE),
        ("vigil/v1/state/agg/api", b" " * (MAX_RESULT_BYTES + 1), Reason.TOO_LARGE),
        ("vigil/v1/probes/us-east/p1", b" " * (MAX_PRESENCE_BYTES + 1), Reason.TOO_LARGE),
        # A presence record may be larger than a result (it lists every target) ...
        ("vigil/v1/probes/us-east/p1", b" " * (MAX_RESULT_BYTES + 1), Reason.INVALID_JSON),
        ("vigil/v1/results/eu-west/api", GOOD, Reason.TOPIC_MISMATCH),
        ("vigil/v1/results/us-east/other", GOOD, Reason.TOPIC_MISMATCH),
        ("vigil/v1/results/mars/api", doc(region="mars"), Reason.UNKNOWN_REGION),
        (TOPIC, doc(started_at=NOW + 3600), Reason.FUTURE),
        (TOPIC, doc(seq=-4), Reason.INVALID),
        (TOPIC, doc(ok=True, error_kind="timeout"), Reason.INVALID),
        (TOPIC, b"[]", Reason.INVALID),
        ("vigil/v1/results/us-east/api/extra", GOOD, Reason.TOPIC),
        ("vigil/v1/elsewhere/x", GOOD, Reason.TOPIC),
        # A bad topic is named first, whatever the payload; a wildcard or an empty level
        # never matches a valid payload's names.
        ("vigil/v1/results/us-east/a+b", b"not json", Reason.TOPIC),
        ("vigil/v1/results/us-east/a+b", GOOD, Reason.TOPIC),
        ("vigil/v1/results/us-east/", GOOD, Reason.TOPIC),
        ("vigil/v1/results//api", GOOD, Reason.TOPIC),
        ("vigil/v1/results/us-east/api/", GOOD, Reason.TOPIC),
        ("vigil/v1/probes/us-east/p1", b"{}", Reason.INVALID),
    ],
)
def test_rejections(topic: str, payload: bytes, reason: Reason) -> None:
    """Each kind of bad message is rejected with its reason, never raised."""
    out = run(topic, payload)
    assert isinstance(out, Rejected)
    assert out.reason is reason
    assert out.detail


@pytest.mark.parametrize(
    ("field", "ahead", "accepted"),
    [
        ("started_at", 0.0, True),
        ("started_at", 29.0, True),  # just inside the 30 s limit
        ("started_at", 30.0, True),  # on the limit
        ("started_at", 31.0, False),  # just outside
        ("scheduled_at", 29.0, True),
        ("scheduled_at", 31.0, False),
        ("started_at", -3600.0, True),  # old results are not skew (they may be retained)
    ],
)
def test_clock_skew_limit_is_max_clock_skew(field: str, ahead: float, accepted: bool) -> None:
    """A timestamp up to max_clock_skew ahead of now passes; one second more is rejected."""
    stamps = {"scheduled_at": NOW, "started_at": NOW, field: NOW + ahead}
    out = run(TOPIC, doc(**stamps))
    if accepted:
        assert isinstance(out, ProbeResult)
    else:
        assert isinstance(out, Rejected)
        assert out.reason is Reason.FUTURE


def test_presence_and_state_records_decode() -> None:
    """Presence and state records on their topics decode to their models."""
    presence = Presence(
        status="online",
        probe_id="us-east-1",
        region="us-east",
        boot_id="b" * 32,
        at=T0,
        targets={"api": 10.0},
    )
    assert run("vigil/v1/probes/us-east/us-east-1", presence.to_json()) == presence
    wrong = run("vigil/v1/probes/us-east/someone-else", presence.to_json())
    assert isinstance(wrong, Rejected)
    assert wrong.reason is Reason.TOPIC_MISMATCH
    record = StateRecord(target="api", verdict=Verdict.DOWN, since=T0, updated_at=T0)
    assert run("vigil/v1/state/agg/api", record.to_json()) == record
    misfiled = run("vigil/v1/state/agg/other", record.to_json())
    assert isinstance(misfiled, Rejected)
    assert misfiled.reason is Reason.TOPIC_MISMATCH


@pytest.mark.parametrize(
    ("ago", "accepted"),
    [(3599.0, True), (3601.0, False), (365 * 86400.0, False)],
)
def test_a_result_older_than_max_age_is_rejected_as_past(ago: float, accepted: bool) -> None:
    """A result that started longer ago than max_age is a counted rejection, not news."""
    payload = doc(scheduled_at=NOW - ago, started_at=NOW - ago)
    out = decode(TOPIC, payload, regions=frozenset(REGIONS), now=NOW, max_skew=30, max_age=3600)
    if accepted:
        assert isinstance(out, ProbeResult)
    else:
        assert isinstance(out, Rejected)
        assert out.reason is Reason.PAST
