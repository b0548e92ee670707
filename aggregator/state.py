"""The aggregator's retained record of its own verdicts, under `vigil/v1/state/{target}`.

A restarted aggregator (or a second replica) reads these back so it neither fires a false
alert nor resolves a real one while it relearns the regions' streaks.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from aggregator.rules import Restored, RestoredRegion, TargetState, Verdict
from wire.result import EpochSeconds, Name, WireModel

STATE_SCHEMA: Final = "vigil.state/v1"


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

    @classmethod
    def of(cls, state: TargetState, now: float, aggregator: str) -> StateRecord:
        """The record of a target's current state."""
        return cls(
            target=state.name,
            verdict=state.verdict,
            since=state.since,
            quorum_degraded=state.quorum_degraded,
            skew_since=state.skew_since,
            regions={
                region: RegionRecord(failing=view.failing, failing_since=view.failing_since)
                for region, view in state.regions.items()
            },
            updated_at=now,
            aggregator=aggregator,
        )

    def restored(self) -> Restored:
        """The engine's view of this record."""
        return Restored(
            target=self.target,
            verdict=self.verdict,
            since=self.since,
            quorum_degraded=self.quorum_degraded,
            skew_since=self.skew_since,
            regions={
                r: RestoredRegion(rr.failing, rr.failing_since) for r, rr in self.regions.items()
            },
        )
