"""`vigil demo`'s live view survives whatever is published on Vigil's topics."""

from __future__ import annotations

import json

import pytest

from cli.demo import watch_line
from tests.rulekit import T0, RegionProbe
from wire.state import StateRecord, Verdict
from wire.topics import state_topic


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("vigil/v1/results/us-east/api", b"not json"),
        ("vigil/v1/results/us-east/api", b"{}"),
        ("vigil/v1/probes/us-east/p1", b"[1, 2]"),
        ("vigil/v1/state/vigil-demo-aggregator/api", b'{"verdict": "exploded"}'),
    ],
)
def test_an_invalid_message_is_one_line_not_the_end_of_the_demo(topic: str, payload: bytes) -> None:
    """A message the contract refuses is reported as ignored instead of raising."""
    line = watch_line(topic, payload, {})
    assert line is not None
    assert "ignored an invalid message" in line


def test_a_streak_beyond_the_wire_bound_is_ignored_like_any_invalid_result() -> None:
    """The poisoned result that once ended the demo now prints one line."""
    doc = RegionProbe("us-east").check(False, T0).model_dump(by_alias=True)
    doc["consecutive_failures"] = 10**12
    line = watch_line("vigil/v1/results/us-east/api", json.dumps(doc).encode(), {})
    assert line is not None
    assert "ignored" in line


def test_a_valid_result_prints_its_line() -> None:
    """A good result still prints as before."""
    result = RegionProbe("us-east").check(False, T0)
    line = watch_line("vigil/v1/results/us-east/api", result.to_json(), {})
    assert line is not None
    assert "FAIL" in line


def test_a_tombstone_says_forgotten_and_a_deleted_record_says_nothing() -> None:
    """A forgotten target's tombstone is one line; its deletion (an empty payload) none."""
    topic = state_topic("vigil-aggregator", "api")
    verdicts = {"api": "up"}
    up = StateRecord(target="api", verdict=Verdict.UP, since=T0, updated_at=T0)
    tombstone = up.model_copy(update={"verdict": Verdict.UNKNOWN, "forgotten_at": T0 + 5})
    line = watch_line(topic, tombstone.to_json(), verdicts)
    assert line is not None
    assert "api is forgotten" in line
    assert "api" not in verdicts
    assert watch_line(topic, b"", verdicts) is None
    assert watch_line(topic, up.to_json(), verdicts) is not None  # known again, said again
