"""Topic building and parsing."""

from __future__ import annotations

import pytest

from wire.topics import (
    PresenceTopic,
    ResultTopic,
    TopicError,
    parse_presence_topic,
    parse_result_topic,
    presence_topic,
    result_topic,
    state_topic,
)


def test_builds_the_documented_topics() -> None:
    """Topics follow the documented v1 layout."""
    assert result_topic("us-east", "api") == "vigil/v1/results/us-east/api"
    assert presence_topic("us-east", "us-east-1") == "vigil/v1/probes/us-east/us-east-1"
    assert state_topic("api") == "vigil/v1/state/api"


def test_parse_inverts_build() -> None:
    """Parsing a built topic gives back its levels."""
    assert parse_result_topic(result_topic("eu-west", "api.v2")) == ResultTopic("eu-west", "api.v2")
    assert parse_presence_topic(presence_topic("eu", "p1")) == PresenceTopic("eu", "p1")


@pytest.mark.parametrize(
    ("region", "target"),
    [("us/east", "api"), ("us-east", "+"), ("#", "api"), ("", "api"), ("us-east", "a b")],
)
def test_refuses_names_that_are_not_one_level(region: str, target: str) -> None:
    """A name with a separator, wildcard or space cannot become a topic level."""
    with pytest.raises(TopicError):
        result_topic(region, target)


@pytest.mark.parametrize(
    "topic",
    [
        "vigil/v1/results/us-east",
        "vigil/v1/results/us-east/api/extra",
        "vigil/v2/results/us-east/api",
        "vigil/v1/probes/us-east/api",
        "vigil/v1/results/us-east/+",
        "other/v1/results/us-east/api",
    ],
)
def test_parse_refuses_foreign_topics(topic: str) -> None:
    """Anything but a well-formed v1 result topic is refused."""
    with pytest.raises(TopicError):
        parse_result_topic(topic)
