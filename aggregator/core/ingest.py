"""Turning an MQTT message into something the engine can use, or a counted rejection.

Pure: topic, payload and the clock in; a decoded message or a `Rejected` reason out. Nothing
a publisher sends can raise out of `decode`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydantic import ValidationError

from wire.result import MAX_PRESENCE_BYTES, MAX_RESULT_BYTES, Presence, ProbeResult
from wire.state import StateRecord
from wire.topics import (
    Kind,
    TopicError,
    is_result_topic_of,
    parse_presence_topic,
    parse_result_topic,
    parse_state_topic,
    topic_kind,
)


class Reason(enum.StrEnum):
    """Why a message was rejected; the `reason` label of `vigil_results_rejected_total`."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    INVALID = "invalid"
    TOPIC = "topic"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_REGION = "unknown_region"
    FUTURE = "future_timestamp"
    PAST = "past_timestamp"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that was dropped, and why."""

    reason: Reason
    detail: str


Decoded = ProbeResult | Presence | StateRecord | Rejected


def _classify(exc: ValidationError) -> Reason:
    for err in exc.errors(include_url=False, include_input=False):
        if err["type"] == "json_invalid":
            return Reason.INVALID_JSON
        if err["loc"] and err["loc"][0] == "schema":
            return Reason.SCHEMA
    return Reason.INVALID


def _short(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(payload)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"[:300]


def decode(
    topic: str,
    payload: bytes,
    *,
    regions: frozenset[str],
    now: float,
    max_skew: float,
    max_age: float = float("inf"),
) -> Decoded:
    """Validate one message against the `wire/` models and the configured regions.

    A result stamped more than `max_skew` ahead of `now` or that started more than `max_age`
    ago is rejected: a broken clock, or news too old to judge by.
    """
    kind = topic_kind(topic)
    limit = MAX_PRESENCE_BYTES if kind is Kind.PRESENCE else MAX_RESULT_BYTES
    if len(payload) > limit:
        return Rejected(Reason.TOO_LARGE, f"{len(payload)} bytes on {topic[:200]}")
    try:
        if kind is Kind.RESULT:
            try:
                result = ProbeResult.from_json(payload)
            except ValidationError:
                parse_result_topic(topic)  # a malformed topic is the first thing wrong
                raise
            region = result.region
            # The payload's names are valid, so a topic equal to theirs is too: no parsing.
            if not is_result_topic_of(topic, region, result.target):
                topic_region, topic_target = parse_result_topic(topic)
                return Rejected(
                    Reason.TOPIC_MISMATCH,
                    f"topic says {topic_region}/{topic_target}, payload {region}/{result.target}",
                )
            if region not in regions:
                return Rejected(Reason.UNKNOWN_REGION, region)
            if result.started_at > now + max_skew or result.scheduled_at > now + max_skew:
                return Rejected(
                    Reason.FUTURE, f"started_at is {result.started_at - now:.0f}s ahead"
                )
            if result.started_at < now - max_age:
                return Rejected(Reason.PAST, f"started_at is {now - result.started_at:.0f}s ago")
            return result
        if kind is Kind.PRESENCE:
            region, probe_id = parse_presence_topic(topic)
            presence = Presence.from_json(payload)
            if (presence.region, presence.probe_id) != (region, probe_id):
                return Rejected(Reason.TOPIC_MISMATCH, f"presence for {region}/{probe_id}")
            if region not in regions:
                return Rejected(Reason.UNKNOWN_REGION, region)
            return presence
        if kind is Kind.STATE:
            _instance, target = parse_state_topic(topic)
            record = StateRecord.from_json(payload)
            if target != record.target:
                return Rejected(Reason.TOPIC_MISMATCH, f"state for {record.target}")
            return record
    except TopicError as exc:
        return Rejected(Reason.TOPIC, str(exc)[:300])
    except ValidationError as exc:
        return Rejected(_classify(exc), _short(exc))
    return Rejected(Reason.TOPIC, f"unexpected topic {topic[:200]}")
