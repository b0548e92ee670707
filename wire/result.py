"""The probe result and presence messages: the one contract probe and aggregator share.

Both are JSON on the wire. Parsing is strict about what would mislead the aggregator
(unknown schema versions, oversized text, impossible numbers, contradictory verdicts) and
tolerant of fields it does not know, so a newer probe can talk to an older aggregator
within one schema version.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

RESULT_SCHEMA: Final = "vigil.result/v1"
PRESENCE_SCHEMA: Final = "vigil.presence/v1"

# Region, target and probe names become MQTT topic levels, Prometheus label values and URL
# path segments, so they are kept to a charset that is safe in all three.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

MAX_ERROR_CHARS = 256
MAX_VERSION_CHARS = 64
MAX_PATH_CHARS = 256

# The largest payloads a reader accepts: a result or a state record (a few hundred bytes in
# practice), and a presence record, which lists every target of a probe (about 11,000 at
# the longest names). The brokers' and clients' maximum packet size (1 MiB) fits both.
MAX_RESULT_BYTES = 64 * 1024
MAX_PRESENCE_BYTES = 1000 * 1024
# A year of milliseconds: anything larger is a clock or unit bug, not a slow check.
MAX_DURATION_MS = 365 * 24 * 3600 * 1000.0
# 2100-01-01T00:00:00Z: epoch seconds beyond this are a unit bug (milliseconds sent as seconds).
MAX_EPOCH_S = 4_102_444_800.0

# A streak longer than this is a forged or broken count (31 years of checks at 1 s); the
# probe stops counting here, and the aggregator refuses more rather than do arithmetic on it.
MAX_STREAK = 1_000_000_000

# Certificates may legitimately expire as late as 9999-12-31 (RFC 5280 GeneralizedTime).
MAX_CERT_EPOCH_S = 253_402_300_799.0

BootId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
EpochSeconds = Annotated[float, Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False)]
Millis = Annotated[float, Field(ge=0, le=MAX_DURATION_MS, allow_inf_nan=False)]
StreakCount = Annotated[int, Field(ge=0, le=MAX_STREAK)]
ShortText = Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)]
HttpStatus = Annotated[int, Field(ge=100, le=599)]


class ErrorKind(enum.StrEnum):
    """Why a health check failed: exactly one kind per failed check."""

    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    # The server answered, but the probe could not parse the answer: a malformed status line
    # or header, bad chunked framing, an undecodable or unsupported Content-Encoding.
    PROTOCOL = "protocol"
    HTTP_STATUS = "http_status"
    # The body, decompressed, is larger than the target's `max_body`: the probe stopped
    # reading there (a decompression bomb, or a page too big to be a health answer).
    BODY_TOO_LARGE = "body_too_large"
    BODY_MISMATCH = "body_mismatch"
    INVALID_BODY = "invalid_body"
    INTERNAL = "internal"


class VersionErrorKind(enum.StrEnum):
    """Why the version endpoint gave no version; never part of the health verdict."""

    AUTH = "auth"
    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    INVALID_BODY = "invalid_body"
    INTERNAL = "internal"


class WireModel(BaseModel):
    """Base of every message on Vigil's topics: frozen, JSON, tolerant of unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise for the wire, fields under their wire names (`schema`)."""
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        """Parse and validate a wire payload.

        Raises:
            pydantic.ValidationError: on invalid JSON or any rejected field.
        """
        return cls.model_validate_json(payload)


class Phases(WireModel):
    """Time spent in each phase of the health request, in ms; None where not measured."""

    dns: Millis | None = None
    connect: Millis | None = None
    tls: Millis | None = None
    ttfb: Millis | None = None
    transfer: Millis | None = None


class ProbeResult(WireModel):
    """One health check of one target from one region, as published by the probe."""

    schema_: Literal["vigil.result/v1"] = Field(default=RESULT_SCHEMA, alias="schema")
    probe_id: Name
    region: Name
    target: Name
    boot_id: BootId
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)]
    scheduled_at: EpochSeconds
    started_at: EpochSeconds
    duration_ms: Millis
    ok: bool
    status_code: HttpStatus | None = None
    error_kind: ErrorKind | None = None
    error: ShortText | None = None
    phases: Phases = Phases()
    version: Annotated[str, StringConstraints(max_length=MAX_VERSION_CHARS)] | None = None
    version_error: VersionErrorKind | None = None
    # The HTTP status of the version request (or login) behind `version_error`, so `auth`
    # reads as 401 or 403; absent when no answer came, and from older probes.
    version_status: HttpStatus | None = None
    tls_not_after: (
        Annotated[float, Field(ge=0, le=MAX_CERT_EPOCH_S, allow_inf_nan=False)] | None
    ) = None
    consecutive_failures: StreakCount
    consecutive_successes: StreakCount
    slow: bool = False
    # The target's configured check interval, so the aggregator never has to guess it (a
    # guess is wrong after a restart, and when checks are re-run early to confirm a failure).
    interval: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = None
    # The probe itself failed (a bug, its own resources), so the check says nothing about
    # the target: never counted toward down, and the streaks are the previous check's.
    inconclusive: bool = False
    # The health endpoint that gave this answer (a profile may move between several); absent
    # from older probes. An older aggregator ignores it (extra="ignore").
    health_path: Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS)] | None = None

    @model_validator(mode="after")
    def _verdict_is_consistent(self) -> Self:
        if self.inconclusive:
            if self.ok or self.error_kind is not ErrorKind.INTERNAL:
                raise ValueError("an inconclusive result is not ok and has error_kind internal")
            if self.consecutive_failures and self.consecutive_successes:
                raise ValueError("a streak is of failures or of successes, not both")
            return self
        if self.ok:
            if self.error_kind is not None:
                raise ValueError("ok result must not carry error_kind")
            if self.consecutive_successes < 1 or self.consecutive_failures != 0:
                raise ValueError(
                    "ok result needs consecutive_successes >= 1 and consecutive_failures == 0"
                )
        else:
            if self.error_kind is None:
                raise ValueError("failed result needs an error_kind")
            if self.consecutive_failures < 1 or self.consecutive_successes != 0:
                raise ValueError(
                    "failed result needs consecutive_failures >= 1 and consecutive_successes == 0"
                )
        return self

    @property
    def ended_at(self) -> float:
        """When the health check ended, by the probe's clock."""
        return self.started_at + self.duration_ms / 1000.0

    def to_json(self) -> bytes:
        """Serialise for the wire; unset optional fields are left out to keep results small."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Presence(WireModel):
    """A probe's retained presence record: `online` on connect, `offline` on exit or death."""

    schema_: Literal["vigil.presence/v1"] = Field(default=PRESENCE_SCHEMA, alias="schema")
    status: Literal["online", "offline"]
    probe_id: Name
    region: Name
    boot_id: BootId
    at: EpochSeconds
    # Target name -> check interval in seconds; empty in the `offline` record.
    targets: Annotated[
        dict[Name, Annotated[float, Field(gt=0, le=86400)]], Field(max_length=100_000)
    ] = {}
