"""MQTT topic names: built and parsed here and nowhere else."""

from __future__ import annotations

import re
from typing import NamedTuple

from wire.result import NAME_PATTERN

PREFIX = "vigil/v1"
RESULTS_FILTER = f"{PREFIX}/results/+/+"
PRESENCE_FILTER = f"{PREFIX}/probes/+/+"
STATE_FILTER = f"{PREFIX}/state/+"

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


def _level(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise TopicError(f"{kind} {value!r} is not a valid topic level (allowed: {NAME_PATTERN})")
    return value


def result_topic(region: str, target: str) -> str:
    """Topic of every result of `target` seen from `region`."""
    return f"{PREFIX}/results/{_level('region', region)}/{_level('target', target)}"


def presence_topic(region: str, probe_id: str) -> str:
    """Topic of a probe's retained online/offline record."""
    return f"{PREFIX}/probes/{_level('region', region)}/{_level('probe_id', probe_id)}"


def state_topic(target: str) -> str:
    """Topic of the aggregator's retained record of its last verdict for `target`."""
    return f"{PREFIX}/state/{_level('target', target)}"


def _split(topic: str, kind: str, levels: int) -> list[str]:
    parts = topic.split("/")
    if len(parts) != 3 + levels or "/".join(parts[:3]) != f"{PREFIX}/{kind}":
        raise TopicError(f"not a {kind} topic: {topic!r}")
    for part in parts[3:]:
        _level("level", part)
    return parts[3:]


def parse_result_topic(topic: str) -> ResultTopic:
    """Split a result topic into region and target.

    Raises:
        TopicError: the topic is not a well-formed result topic.
    """
    region, target = _split(topic, "results", 2)
    return ResultTopic(region, target)


def parse_presence_topic(topic: str) -> PresenceTopic:
    """Split a presence topic into region and probe id.

    Raises:
        TopicError: the topic is not a well-formed presence topic.
    """
    region, probe_id = _split(topic, "probes", 2)
    return PresenceTopic(region, probe_id)
