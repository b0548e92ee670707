"""The wire result model: round trip and rejection of bad payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from wire.result import ErrorKind, Phases, Presence, ProbeResult, VersionErrorKind

BOOT = "0123456789abcdef0123456789abcdef"


def good(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "vigil.result/v1",
        "probe_id": "us-east-1",
        "region": "us-east",
        "target": "api",
        "boot_id": BOOT,
        "seq": 7,
        "scheduled_at": 1_790_000_000.0,
        "started_at": 1_790_000_000.01,
        "duration_ms": 12.5,
        "ok": True,
        "status_code": 200,
        "phases": {"dns": 0.5, "connect": 1.0, "ttfb": 3.0, "transfer": 0.1},
        "version": "3.8.34",
        "consecutive_failures": 0,
        "consecutive_successes": 4,
        "slow": False,
    }
    doc.update(changes)
    return doc


def test_round_trip_keeps_every_field() -> None:
    """A result serialised and parsed again is equal to the original."""
    result = ProbeResult.model_validate(good(version_error=None, tls_not_after=1_800_000_000.0))
    again = ProbeResult.from_json(result.to_json())
    assert again == result
    assert json.loads(result.to_json())["schema"] == "vigil.result/v1"


def test_failed_result_round_trip() -> None:
    """A failure keeps its kind, text and streak."""
    result = ProbeResult.model_validate(
        good(
            ok=False,
            status_code=503,
            error_kind="http_status",
            error="HTTP 503",
            consecutive_failures=3,
            consecutive_successes=0,
            version_error="auth",
            version_status=403,
        )
    )
    again = ProbeResult.from_json(result.to_json())
    assert again.error_kind is ErrorKind.HTTP_STATUS
    assert again.version_error is VersionErrorKind.AUTH
    assert again.version_status == 403
    assert again.consecutive_failures == 3


def test_a_result_without_version_status_stays_valid() -> None:
    """An older probe's result (no `version_status`) parses, and none is written for it."""
    result = ProbeResult.from_json(json.dumps(good(version_error="auth", version=None)))
    assert (result.version_error, result.version_status) == (VersionErrorKind.AUTH, None)
    assert "version_status" not in json.loads(result.to_json())


def test_unknown_fields_are_tolerated() -> None:
    """A newer probe's extra field does not make an older aggregator drop the result."""
    result = ProbeResult.model_validate(good(added_in_v1_1="x"))
    assert result.seq == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema": "vigil.result/v2"}, "vigil.result/v1"),
        ({"region": "us/east"}, "region"),
        ({"target": "+"}, "target"),
        ({"target": "a" * 64}, "target"),
        ({"boot_id": "not-hex"}, "boot_id"),
        ({"seq": -1}, "seq"),
        ({"duration_ms": -5}, "duration_ms"),
        ({"duration_ms": float("nan")}, "duration_ms"),
        ({"started_at": 1_790_000_000_000.0}, "started_at"),
        ({"status_code": 42}, "status_code"),
        ({"version_status": 600}, "version_status"),
        ({"version_status": 99}, "version_status"),
        ({"error": "x" * 257, "ok": False, "error_kind": "connect"}, "error"),
        ({"version": "v" * 65}, "version"),
        ({"error_kind": "exploded"}, "error_kind"),
        ({"ok": True, "error_kind": "timeout"}, "must not carry error_kind"),
        ({"ok": False, "error_kind": None}, "needs an error_kind"),
        (
            {"ok": False, "error_kind": "timeout", "consecutive_failures": 0},
            "consecutive_failures >= 1",
        ),
        ({"consecutive_failures": 2}, "consecutive_successes >= 1"),
        ({"phases": {"dns": -1}}, "phases.dns"),
    ],
)
def test_rejects_nonsense(changes: dict[str, Any], message: str) -> None:
    """Each kind of bad value is refused with a message that points at it."""
    with pytest.raises(ValidationError) as info:
        ProbeResult.model_validate(good(**changes))
    assert message in str(info.value)


def test_rejects_invalid_json() -> None:
    """Bytes that are not JSON raise a validation error, not a crash."""
    with pytest.raises(ValidationError):
        ProbeResult.from_json(b"\xff{not json")


def test_phases_default_to_unknown() -> None:
    """Phases not measured are None, not zero."""
    assert Phases().model_dump() == dict.fromkeys(("dns", "connect", "tls", "ttfb", "transfer"))


def test_presence_round_trip() -> None:
    """An online presence record carries the probe's targets and intervals."""
    p = Presence(
        status="online",
        probe_id="eu-west-1",
        region="eu-west",
        boot_id=BOOT,
        at=1_790_000_000.0,
        targets={"api": 10.0},
    )
    assert Presence.from_json(p.to_json()) == p


def test_presence_rejects_unknown_status() -> None:
    """A presence status other than online/offline is refused."""
    with pytest.raises(ValidationError):
        Presence.model_validate(
            {"status": "maybe", "probe_id": "p", "region": "r", "boot_id": BOOT, "at": 1.0}
        )
