"""Topic building and parsing."""

from __future__ import annotations

import pytest

from wire.topics import (
    ALL_FILTERS,
    PRESENCE_FILTER,
    RESULTS_FILTER,
    STATE_FILTER,
    Kind,
    PresenceTopic,
    ResultTopic,
    StateTopic,
    TopicError,
    aggregator_filters,
    instance_level,
    parse_presence_topic,
    parse_result_topic,
    parse_state_topic,
    presence_topic,
    result_topic,
    state_filter,
    state_topic,
    topic_kind,
)


def test_builds_the_documented_topics() -> None:
    """Topics follow the documented v1 layout."""
    assert result_topic("us-east", "api") == "vigil/v1/results/us-east/api"
    assert presence_topic("us-east", "us-east-1") == "vigil/v1/probes/us-east/us-east-1"
    assert state_topic("aggregator-b", "api") == "vigil/v1/state/aggregator-b/api"


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


def test_state_topic_parse_inverts_build() -> None:
    """A state topic gives back its instance and target, and a result topic is not one."""
    assert parse_state_topic(state_topic("agg-1", "api.v2")) == StateTopic("agg-1", "api.v2")
    with pytest.raises(TopicError):
        parse_state_topic("vigil/v1/state/agg-1/api/extra")
    with pytest.raises(TopicError):
        parse_state_topic(result_topic("eu", "api"))


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("vigil/v1/state/api", id="legacy-single-level"),
        pytest.param("vigil/v1/state/agg/+", id="wildcard-target"),
        pytest.param("vigil/v1/state/+/api", id="wildcard-instance"),
        pytest.param("vigil/v1/state//api", id="empty-instance"),
    ],
)
def test_parse_state_topic_refuses_malformed_and_legacy_topics(topic: str) -> None:
    """Only `vigil/v1/state/{instance}/{target}` is a state topic; the pre-HA layout is not."""
    with pytest.raises(TopicError):
        parse_state_topic(topic)


@pytest.mark.parametrize(
    ("instance", "valid"),
    [
        ("vigil-aggregator", True),
        ("aggregator-b", True),
        ("agg_1.eu", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("vigil/aggregator", False),
        ("agg+", False),
        ("#", False),
        ("", False),
        ("-agg", False),
        ("agg b", False),
    ],
)
def test_an_instance_must_be_one_topic_level(instance: str, valid: bool) -> None:
    """The client id names a subtree, so separators, wildcards and spaces are refused."""
    if valid:
        assert instance_level(instance) == instance
        assert state_filter(instance) == f"vigil/v1/state/{instance}/+"
    else:
        with pytest.raises(TopicError):
            instance_level(instance)
        with pytest.raises(TopicError):
            state_topic(instance, "api")


def test_an_aggregator_subscribes_to_its_own_state_and_everyone_else_to_all() -> None:
    """Each aggregator reads back its own records only; a whole-system reader sees every one."""
    assert aggregator_filters("agg-a") == (
        "vigil/v1/state/agg-a/+",
        RESULTS_FILTER,
        PRESENCE_FILTER,
    )
    assert STATE_FILTER == "vigil/v1/state/+/+"
    assert STATE_FILTER in ALL_FILTERS


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("vigil/v1/results/us-east/api", Kind.RESULT),
        ("vigil/v1/probes/us-east/p1", Kind.PRESENCE),
        ("vigil/v1/state/vigil-aggregator/api", Kind.STATE),
        ("vigil/v1/results/too/many/levels", Kind.RESULT),  # dispatch only; parse refuses it
        ("vigil/v1/stateful/api", None),
        ("vigil/v2/results/us-east/api", None),
        ("vigil/v1/results", None),
        ("other", None),
        ("", None),
    ],
)
def test_topic_kind_dispatches_on_the_prefix_and_kind_level(topic: str, kind: Kind | None) -> None:
    """Dispatch looks at the prefix and the kind level; a near miss is not ours."""
    assert topic_kind(topic) == kind
