"""How both services and the CLI write a moment in time for people and for Alertmanager."""

from __future__ import annotations

import datetime

# datetime's range: 0001-01-01 to 9999-12-31. Times are clamped into [epoch, year 9999] so
# formatting a time can never raise, whatever arithmetic produced it.
_LATEST = 253_402_300_799.0


def _moment(ts: float) -> datetime.datetime:
    clamped = min(max(ts, 0.0), _LATEST) if ts == ts else 0.0  # NaN is not a time: the epoch
    return datetime.datetime.fromtimestamp(clamped, datetime.UTC)


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 in UTC with milliseconds (Alertmanager's format); never raises."""
    return _moment(ts).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_clock(ts: float | None, missing: str = "-") -> str:
    """A moment as `HH:MM:SSZ` (UTC), or `missing` when there is none."""
    if not ts:
        return missing
    return _moment(ts).strftime("%H:%M:%SZ")
