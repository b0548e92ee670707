"""The aggregator's retained record of its own verdicts: `vigil/v1/state/{instance}/{target}`.

A restarted aggregator reads its own instance's records back so it neither fires a false
alert nor resolves a real one while it relearns the regions' streaks; each aggregator of an
HA pair has its own subtree (`instance` is its client id). Part of the contract: anyone on
the broker (`vigil demo`, a dashboard) may read them.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal

from pydantic import Field

from wire.result import EpochSeconds, Name, WireModel

STATE_SCHEMA: Final = "vigil.state/v1"


class Verdict(enum.StrEnum):
    """A target's overall state."""

    UP = "up"
    DOWN = "down"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"


class RegionRecord(WireModel):
    """A region's failing flag in the record."""

    failing: bool
    failing_since: EpochSeconds | None = None


class StateRecord(WireModel):
    """One target's verdict as the aggregator last concluded it."""

    schema_: Literal["vigil.state/v1"] = Field(default=STATE_SCHEMA, alias="schema")
    target: Name
    verdict: Verdict
    since: EpochSeconds
    quorum_degraded: bool = False
    skew_since: EpochSeconds | None = None
    regions: Annotated[dict[Name, RegionRecord], Field(max_length=1000)] = {}
    updated_at: EpochSeconds
    aggregator: Annotated[str, Field(max_length=128)] = ""
    # Set on a tombstone: the aggregator forgot the target (nobody reported it for
    # `forget_after`) at this time, so a retained result from before it is old news and must
    # not bring the target back after a restart. A newer result does.
    forgotten_at: EpochSeconds | None = None
