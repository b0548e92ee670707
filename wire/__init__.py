"""The contract between probe and aggregator: the result model and the MQTT topics."""

from wire.result import (
    PRESENCE_SCHEMA,
    RESULT_SCHEMA,
    ErrorKind,
    Phases,
    Presence,
    ProbeResult,
    VersionErrorKind,
)
from wire.topics import (
    PRESENCE_FILTER,
    RESULTS_FILTER,
    TopicError,
    parse_presence_topic,
    parse_result_topic,
    presence_topic,
    result_topic,
    state_filter,
    state_topic,
)

__all__ = [
    "PRESENCE_FILTER",
    "PRESENCE_SCHEMA",
    "RESULTS_FILTER",
    "RESULT_SCHEMA",
    "ErrorKind",
    "Phases",
    "Presence",
    "ProbeResult",
    "TopicError",
    "VersionErrorKind",
    "parse_presence_topic",
    "parse_result_topic",
    "presence_topic",
    "result_topic",
    "state_filter",
    "state_topic",
]
