"""What the operator API and the status page show, built from the aggregator's state. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from aggregator.config import Rule
from aggregator.core.alerts import AlertBook
from aggregator.core.history import SeriesStore
from aggregator.core.rules import Engine, Evaluation, OnTargetError, Verdict
from aggregator.present.listing import StatusQuery, select
from aggregator.present.schema import (
    AlertInfo,
    AlertsResponse,
    ExplainRegion,
    ExplainResponse,
    HistoryPoint,
    LastResult,
    ProbeInfo,
    Quorum,
    RecentPoint,
    RegionInfo,
    RegionsResponse,
    RegionStatus,
    StatusResponse,
    TargetDetail,
    TargetStatus,
    VerdictCounts,
)
from wire.result import VersionErrorKind

T = TypeVar("T")


@dataclass(frozen=True)
class Sources:
    """Everything the views read."""

    engine: Engine
    store: SeriesStore
    alerts: AlertBook
    ready: bool
    # Told about a target whose view could not be built; the list goes on without it.
    on_error: OnTargetError | None = None


def _target_status(src: Sources, name: str, now: float) -> TargetStatus:
    state = src.engine.snapshot(name)
    assert state is not None, "callers check the target exists"
    ev: Evaluation = src.engine.judge(name, now)
    regions = []
    for r in ev.regions:
        view = state.regions.get(r.region)
        last = None
        if view is not None:
            last = LastResult(
                started_at=view.started_at,
                ok=view.ok,
                status_code=view.status_code,
                error_kind=view.error_kind,
                error=view.error,
                duration_ms=view.duration_ms,
                phases=view.phases,
                health_path=view.health_path,
            )
        regions.append(
            RegionStatus(
                region=r.region,
                failing=r.failing,
                failing_since=r.failing_since,
                stale=r.stale,
                stale_reason=r.stale_reason,
                pending=r.pending,
                consecutive_failures=r.consecutive_failures,
                consecutive_successes=r.consecutive_successes,
                version=r.version,
                version_since=view.version_since if view else None,
                version_error=VersionErrorKind(r.version_error) if r.version_error else None,
                version_status=r.version_status,
                last_result=last,
            )
        )
    return TargetStatus(
        target=name,
        # Before the first evaluation the stored verdict is a placeholder: say unknown.
        verdict=state.verdict.value if state.evaluation is not None else "unknown",
        since=state.since,
        quorum_degraded=state.quorum_degraded,
        version_skew=state.version_skew,
        quorum=Quorum(
            failing=sorted(ev.failing),
            fresh=sorted(ev.fresh),
            stale=sorted(ev.stale),
            required=ev.required,
            min_regions=ev.min_regions,
        ),
        regions=regions,
    )


def _counts(by_verdict: dict[str, int]) -> VerdictCounts:
    return VerdictCounts(**by_verdict, total=sum(by_verdict.values()))


def status(src: Sources, now: float, query: StatusQuery | None = None) -> StatusResponse:
    """One page of targets, problems first, with the counts; views are built for it alone.

    With a `region` asked, each target shows that region's view only.
    """
    query = query or StatusQuery()
    page = select(src.engine.snapshots(), query)
    shown = [query.region] if query.region is not None else list(src.engine.regions)

    def view(name: str) -> TargetStatus:
        full = _target_status(src, name, now)
        if query.region is None:
            return full
        return full.model_copy(update={"regions": [r for r in full.regions if r.region in shown]})

    return StatusResponse(
        ready=src.ready,
        generated_at=now,
        regions=shown,
        targets=list(_each_target(src, view, page.names)),
        counts=_counts(page.counts),
        matching=_counts(page.matching),
        matched=page.matched,
        next_cursor=page.next_cursor,
    )


def _each_target(
    src: Sources, view: Callable[[str], T], names: Iterable[str] | None = None
) -> Iterator[T]:
    for name in src.engine.names() if names is None else names:
        try:
            yield view(name)
        except Exception as exc:  # one broken target must not take the page down
            if src.on_error is None:
                raise
            src.on_error(name, exc)


def histories(
    src: Sources, names: Iterable[str] | None = None
) -> dict[str, dict[str, list[RecentPoint]]]:
    """Recent results per region of every target, or of `names`, for the status page."""

    def recent(name: str) -> tuple[str, dict[str, list[RecentPoint]]]:
        return name, {region: src.store.recent(name, region) for region in src.engine.regions}

    return dict(_each_target(src, recent, names))


def history(src: Sources, name: str) -> dict[str, list[HistoryPoint]]:
    """A target's recent results per region, oldest first."""
    return {
        region: [
            HistoryPoint(started_at=t, duration_ms=d, status_code=c, outcome=o)
            for t, d, c, o in src.store.recent(name, region)
        ]
        for region in src.engine.regions
    }


def target_detail(src: Sources, name: str, now: float) -> TargetDetail | None:
    """One target with its recent results per region; None when unknown."""
    if name not in src.engine:
        return None
    base = _target_status(src, name, now)
    return TargetDetail(**base.model_dump(), history=history(src, name))


def explain(src: Sources, name: str, rule: Rule, now: float) -> ExplainResponse | None:
    """Why a target is or is not alerting, as the rule evaluated it; None when unknown."""
    engine = src.engine
    state = engine.snapshot(name)
    if state is None:
        return None
    ev = engine.judge(name, now)
    regions = []
    for r in ev.regions:
        view = state.regions.get(r.region)
        stale_after = engine.stale_after(name, r.region)
        counted: Literal["failing", "ok", "stale", "pending"]
        if r.stale:
            counted, reason = "stale", f"not counted: {r.stale_reason}"
        elif r.pending:
            counted = "pending"
            reason = (
                f"not counted yet: {r.consecutive_failures} of {rule.failures} failures or "
                f"{r.consecutive_successes} of {rule.recoveries} successes needed to judge"
            )
        elif r.failing:
            counted = "failing"
            reason = (
                f"{r.consecutive_failures} consecutive failures reached {rule.failures}"
                if r.consecutive_failures >= rule.failures
                else f"still failing: {r.consecutive_successes} of {rule.recoveries} "
                "successes needed to recover"
            )
        else:
            counted = "ok"
            reason = (
                f"{r.consecutive_failures} of {rule.failures} failures needed to fail"
                if r.consecutive_failures
                else f"passing ({r.consecutive_successes} in a row)"
            )
        regions.append(
            ExplainRegion(
                region=r.region,
                counted_as=counted,
                reason=reason,
                consecutive_failures=r.consecutive_failures,
                failures_needed=rule.failures,
                consecutive_successes=r.consecutive_successes,
                recoveries_needed=rule.recoveries,
                failing_since=r.failing_since,
                last_result_age_s=(now - view.started_at) if view else None,
                stale_after_s=stale_after,
            )
        )
    failing, fresh, stale = len(ev.failing), len(ev.fresh), len(ev.stale)
    lines = [
        f"{failing} failing of {fresh} fresh regions ({stale} stale); down needs {rule.regions} "
        f"failing, or on a degraded quorum every fresh region failing with at least "
        f"{rule.min_regions} fresh",
    ]
    if ev.verdict is Verdict.DOWN and not ev.quorum_degraded:
        lines.append(f"{failing} >= {rule.regions}: down")
    elif ev.verdict is Verdict.DOWN:
        lines.append(
            f"{failing} < {rule.regions}, but all {fresh} fresh regions fail and "
            f"{fresh} >= {rule.min_regions}: down on a degraded quorum"
        )
    elif ev.verdict is Verdict.DEGRADED:
        lines.append(f"{failing} < {rule.regions} and not every fresh region fails: degraded")
    elif ev.verdict is Verdict.UP:
        lines.append(f"no region failing and {fresh} >= {rule.min_regions} fresh: up")
    else:
        lines.append(f"no region failing but only {fresh} < {rule.min_regions} fresh: unknown")
    return ExplainResponse(
        target=name,
        verdict=ev.verdict.value,
        alerting=ev.verdict is Verdict.DOWN,
        quorum_degraded=ev.quorum_degraded,
        rule={
            "failures": rule.failures,
            "regions": rule.regions,
            "recoveries": rule.recoveries,
            "min_regions": rule.min_regions,
            "stale_after": rule.stale_after,
            "version_skew_after": rule.version_skew_after,
        },
        regions=regions,
        arithmetic=lines,
    )


def regions(src: Sources, now: float) -> RegionsResponse:
    """Each configured region with its probes' presence."""
    out = []
    for region in src.engine.regions:
        probes = [
            ProbeInfo(
                probe_id=p.probe_id,
                boot_id=p.boot_id,
                online=p.online,
                last_seen=p.at,
                targets=dict(p.targets),
            )
            for p in src.engine.probes(region)
        ]
        out.append(
            RegionInfo(region=region, stale=src.engine.region_stale(region, now), probes=probes)
        )
    return RegionsResponse(regions=out)


def alerts(src: Sources) -> AlertsResponse:
    """Alerts firing now and those resolved recently (still being re-sent)."""
    firing: list[AlertInfo] = []
    resolved: list[AlertInfo] = []
    for alert, starts_at, resolved_at in src.alerts.active():
        info = AlertInfo(
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            starts_at=starts_at,
            resolved_at=resolved_at,
            generator_url=alert.generator_url,
        )
        (firing if resolved_at is None else resolved).append(info)
    return AlertsResponse(firing=firing, resolved=resolved)
