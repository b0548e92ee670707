"""MQTT topic names: built, parsed and matched here and nowhere else."""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from wire.result import NAME_PATTERN

PREFIX = "vigil/v1"


class Kind(enum.StrEnum):
    """The kinds of message on Vigil's topics; the value is the topic level after the prefix."""

    RESULT = "results"
    PRESENCE = "probes"
    STATE = "state"


# Topic levels after `{PREFIX}/{kind}` for each kind.
_LEVELS = {Kind.RESULT: 2, Kind.PRESENCE: 2, Kind.STATE: 2}

RESULTS_FILTER = f"{PREFIX}/{Kind.RESULT}/+/+"
PRESENCE_FILTER = f"{PREFIX}/{Kind.PRESENCE}/+/+"
# Every aggregator's state records. The single-level `vigil/v1/state/{target}` records of
# versions before the HA pair do not match it, so a reader never sees them.
STATE_FILTER = f"{PREFIX}/{Kind.STATE}/+/+"
# Everything a consumer of the whole system subscribes to.
ALL_FILTERS = (STATE_FILTER, RESULTS_FILTER, PRESENCE_FILTER)

_NAME = re.compile(NAME_PATTERN)


class TopicError(ValueError):
    """A topic is not one of Vigil's, or a name cannot be used as a topic level."""


class ResultTopic(NamedTuple):
    """The levels of a result topic."""

    region: str
    target: str


class PresenceTopic(NamedTuple):
    """The levels of a presence topic."""

    region: str
    probe_id: str


class StateTopic(NamedTuple):
    """The levels of a state topic."""

    instance: str
    target: str


def _level(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise TopicError(f"{kind} {value!r} is not a valid topic level (allowed: {NAME_PATTERN})")
    return value


def result_topic(region: str, target: str) -> str:
    """Topic of every result of `target` seen from `region`."""
    return f"{PREFIX}/{Kind.RESULT}/{_level('region', region)}/{_level('target', target)}"


def presence_topic(region: str, probe_id: str) -> str:
    """Topic of a probe's retained online/offline record."""
    return f"{PREFIX}/{Kind.PRESENCE}/{_level('region', region)}/{_level('probe_id', probe_id)}"


def instance_level(instance: str) -> str:
    """`instance` (an aggregator's client id) if it can name its state subtree.

    Raises:
        TopicError: it is not a valid topic level.
    """
    return _level("instance", instance)


def state_topic(instance: str, target: str) -> str:
    """Topic of aggregator `instance`'s retained record of its last verdict for `target`.

    One subtree per instance: each aggregator of an HA pair reads back only its own records,
    so neither restores a verdict the other reached.
    """
    return f"{PREFIX}/{Kind.STATE}/{instance_level(instance)}/{_level('target', target)}"


def state_filter(instance: str) -> str:
    """Filter matching every state record of aggregator `instance`, and no other's."""
    return f"{PREFIX}/{Kind.STATE}/{instance_level(instance)}/+"


def aggregator_filters(instance: str) -> tuple[str, ...]:
    """What aggregator `instance` subscribes to: its own state records, results, presence.

    The state filter comes first, so its retained records arrive with the other retained
    messages, before the first verdict.
    """
    return (state_filter(instance), RESULTS_FILTER, PRESENCE_FILTER)


_RESULT_PREFIX = f"{PREFIX}/{Kind.RESULT}/"


def is_result_topic_of(topic: str, region: str, target: str) -> bool:
    """Whether `topic` is exactly the result topic of (`region`, `target`).

    For names already validated (a decoded result's): the per-message fast path, with no
    level parsing; anything else goes through `parse_result_topic`.
    """
    return topic == f"{_RESULT_PREFIX}{region}/{target}"


def topic_kind(topic: str) -> Kind | None:
    """Which kind of message a topic carries, judged by its first levels only; None if not ours.

    Cheap, for dispatch; the `parse_*` functions validate the rest.
    """
    parts = topic.split("/", 3)
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        return None
    try:
        return Kind(parts[2])
    except ValueError:
        return None


def _split(topic: str, kind: Kind) -> list[str]:
    parts = topic.split("/")
    if len(parts) != 3 + _LEVELS[kind] or "/".join(parts[:3]) != f"{PREFIX}/{kind}":
        raise TopicError(f"not a {kind.name.lower()} topic: {topic!r}")
    for part in parts[3:]:
        _level("level", part)
    return parts[3:]


def parse_result_topic(topic: str) -> ResultTopic:
    """Split a result topic into region and target.

    Raises:
        TopicError: the topic is not a well-formed result topic.
    """
    region, target = _split(topic, Kind.RESULT)
    return ResultTopic(region, target)


def parse_presence_topic(topic: str) -> PresenceTopic:
    """Split a presence topic into region and probe id.

    Raises:
        TopicError: the topic is not a well-formed presence topic.
    """
    region, probe_id = _split(topic, Kind.PRESENCE)
    return PresenceTopic(region, probe_id)


def parse_state_topic(topic: str) -> StateTopic:
    """Split a state topic into the aggregator instance that wrote it and its target.

    Raises:
        TopicError: the topic is not a well-formed state topic (the single-level
            `vigil/v1/state/{target}` of versions before the HA pair is not).
    """
    instance, target = _split(topic, Kind.STATE)
    return StateTopic(instance, target)
