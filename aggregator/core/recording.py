"""What the pipeline tells the history, and the recorder used when history is off.

The pipeline depends on this protocol only; the SQLite-backed `aggregator.recorder.History`
is wired in by `app.py`, so the core never imports a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from aggregator.core.rules import TargetSnapshot, Transition
from wire.result import ProbeResult


class Recorder(Protocol):
    """What the pipeline tells the history."""

    def observe(self, result: ProbeResult, now: float) -> None:
        """One applied result."""

    def transitions(self, transitions: list[Transition], now: float) -> None:
        """Transitions the engine emitted."""

    def loaded(self, targets: Iterable[TargetSnapshot], now: float) -> None:
        """State is loaded: every target's verdict as it stands."""

    def tick_slices(self, now: float) -> Iterator[None]:
        """Once a second; yields between slices of work so the event loop can run."""

    def forget(self, target: str) -> None:
        """The engine forgot a target."""


class NoHistory:
    """The recorder when history is off."""

    def observe(self, result: ProbeResult, now: float) -> None:
        """Nothing to do."""

    def transitions(self, transitions: list[Transition], now: float) -> None:
        """Nothing to do."""

    def loaded(self, targets: Iterable[TargetSnapshot], now: float) -> None:
        """Nothing to do."""

    def tick_slices(self, now: float) -> Iterator[None]:
        """Nothing to do."""
        return iter(())

    def forget(self, target: str) -> None:
        """Nothing to do."""
