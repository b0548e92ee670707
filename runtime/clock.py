"""How both services and the CLI write a moment in time for people and for Alertmanager."""

from __future__ import annotations

import datetime


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 in UTC with milliseconds (Alertmanager's format)."""
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_clock(ts: float | None, missing: str = "-") -> str:
    """A moment as `HH:MM:SSZ` (UTC), or `missing` when there is none."""
    if not ts:
        return missing
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%H:%M:%SZ")
