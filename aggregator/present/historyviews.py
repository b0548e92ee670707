"""What the history API answers: response models, and the pure parts of building them.

`edges/historyapi.py` runs the queries and builds these. Windows are whole buckets of a
rollup tier: `24h` is the last 24 hours including the current one (hourly rows),
`7d`/`30d`/`90d` the last days including today (daily rows); burn rates use the last 5 and
60 closed minutes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from aggregator.core.incidents import Incident
from aggregator.core.notices import Window
from aggregator.core.rollup import Tier, bucket_of
from aggregator.core.uptime import (
    CheckCounts,
    TimeSplit,
)

WINDOWS: dict[str, tuple[Tier, int]] = {
    "24h": (Tier.HOUR, 24),
    "7d": (Tier.DAY, 7),
    "30d": (Tier.DAY, 30),
    "90d": (Tier.DAY, 90),
}
BAR_DAYS = 90


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class RegionPart(_Model):
    """One region's part in an incident."""

    region: str
    first_failure_at: float
    first_error: str | None


class IncidentDoc(_Model):
    """One incident: a target's time away from `up`."""

    id: int
    target: str
    started_at: float
    ended_at: float | None
    open: bool
    duration_s: float
    peak: str
    regions: list[RegionPart]
    # Region -> version at onset and at recovery; `version_at_start` is the most common one.
    versions_start: dict[str, str]
    versions_end: dict[str, str]
    version_at_start: str | None
    version_at_end: str | None
    maintenance: bool
    note: str | None


class IncidentsResponse(_Model):
    """Incidents newest first; `next_before` pages on (`?before=`)."""

    incidents: list[IncidentDoc]
    next_before: int | None


class WindowUptime(_Model):
    """A target's availability over one window, and each region's."""

    window: str
    start: float
    end: float
    availability: float | None
    up_s: float
    degraded_s: float
    down_s: float
    maintenance_s: float
    unknown_s: float
    regions: dict[str, float | None]


class DayUptime(_Model):
    """One day of the history bar."""

    day: float
    availability: float | None


class UptimeResponse(_Model):
    """A target's availability, error budget and burn rates."""

    target: str
    slo: float
    slo_window_s: float
    availability_slo_window: float | None
    budget_left: float | None
    burn_rate_5m: float | None
    burn_rate_1h: float | None
    burn_thresholds: dict[str, float]
    severity: str | None
    windows: list[WindowUptime]
    daily: list[DayUptime]


class LatencyPoint(_Model):
    """One bucket of one region's latency (successful checks), ms."""

    bucket: float
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


class DeployMarker(_Model):
    """A version change seen by one region."""

    region: str
    at: float
    version: str


class LatencyResponse(_Model):
    """A target's latency per region over a time range."""

    target: str
    start: float
    end: float
    tier: str
    budgets_ms: list[float]
    regions: dict[str, list[LatencyPoint]]
    deploys: list[DeployMarker]


class TargetUptime(_Model):
    """One row of the uptime listing."""

    target: str
    availability_24h: float | None
    availability_30d: float | None


class UptimeListResponse(_Model):
    """Every target's 24 h and 30 d availability."""

    targets: list[TargetUptime]


class AnnouncementDoc(_Model):
    """The page's banner."""

    text: str
    at: float


class AnnouncementResponse(_Model):
    """The banner in force, if any."""

    announcement: AnnouncementDoc | None


class WindowDoc(_Model):
    """A maintenance window and the Alertmanager silences made for it."""

    id: int
    target: str
    starts_at: float
    ends_at: float
    reason: str
    active: bool
    silences: dict[str, str | None]
    errors: dict[str, str]


class WindowsResponse(_Model):
    """Maintenance windows not over yet."""

    windows: list[WindowDoc]


def _most_common(versions: Mapping[str, str]) -> str | None:
    if not versions:
        return None
    return Counter(versions.values()).most_common(1)[0][0]


def incident_doc(i: Incident, now: float) -> IncidentDoc:
    """An incident as the API shows it."""
    return IncidentDoc(
        id=i.id,
        target=i.target,
        started_at=i.started_at,
        ended_at=i.ended_at,
        open=i.open,
        duration_s=round(i.duration(now), 3),
        peak=i.peak.value,
        regions=[
            RegionPart(region=r, first_failure_at=v.first_failure_at, first_error=v.first_error)
            for r, v in sorted(i.regions.items(), key=lambda kv: kv[1].first_failure_at)
        ],
        versions_start=i.versions_start,
        versions_end=i.versions_end,
        version_at_start=_most_common(i.versions_start),
        version_at_end=_most_common(i.versions_end),
        maintenance=i.maintenance,
        note=i.note,
    )


def window_doc(w: Window, now: float) -> WindowDoc:
    """A maintenance window as the API shows it."""
    return WindowDoc(
        id=w.id,
        target=w.target,
        starts_at=w.starts_at,
        ends_at=w.ends_at,
        reason=w.reason,
        active=w.starts_at <= now < w.ends_at,
        silences=w.silences,
        errors=w.errors,
    )


def window_range(name: str, now: float) -> tuple[Tier, float, float]:
    """The tier and [start, end) of a named window."""
    tier, count = WINDOWS[name]
    current = bucket_of(now, tier)
    return tier, float(current - (count - 1) * tier.value), float(current + tier.value)


def _seconds(ms: int) -> float:
    return round(ms / 1000.0, 3)


def uptime_window(
    name: str, start: float, end: float, split: TimeSplit,
    regions: Mapping[str, CheckCounts], count_maintenance: bool,
) -> WindowUptime:  # fmt: skip
    """One window's availability, from its time split and each region's checks."""
    return WindowUptime(
        window=name,
        start=start,
        end=end,
        availability=split.availability(count_maintenance),
        up_s=_seconds(split.up_ms),
        degraded_s=_seconds(split.degraded_ms),
        down_s=_seconds(split.down_ms),
        maintenance_s=_seconds(split.maint_ms),
        unknown_s=_seconds(split.unknown_ms),
        regions={r: c.availability() for r, c in sorted(regions.items())},
    )
