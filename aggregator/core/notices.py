"""What operators post: the page's banner and maintenance windows. Plain records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Announcement:
    """The page's banner."""

    text: str
    at: float


@dataclass(frozen=True)
class Window:
    """A maintenance window and the silences made for it."""

    id: int
    target: str
    starts_at: float
    ends_at: float
    reason: str
    silences: dict[str, str | None]
    errors: dict[str, str]
    created_at: float
