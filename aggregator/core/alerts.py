"""Turning verdicts into Alertmanager alerts, and deciding when to (re)send them. Pure.

`desired_alerts` says which alerts the engine's state calls for right now; `AlertBook`
remembers what was sent and returns what to send: new alerts at once, firing ones again
every `resend_interval` with `endsAt = now + 4 x resend_interval` (as Prometheus does), and a
resolved alert with `endsAt` = the resolution time, re-sent for `resolved_retention`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aggregator.core.rules import (
    Engine,
    OnTargetError,
    RegionEvidence,
    TargetSnapshot,
    Verdict,
)
from runtime.clock import rfc3339

SERVICE_DOWN = "ServiceDown"
SERVICE_REGION_DOWN = "ServiceRegionDown"
PROBE_OFFLINE = "ProbeOffline"
VERSION_SKEW = "ServiceVersionSkew"
ALERTNAMES = (SERVICE_DOWN, SERVICE_REGION_DOWN, PROBE_OFFLINE, VERSION_SKEW)


@dataclass(frozen=True)
class AlertSettings:
    """What every alert carries besides the engine's facts."""

    labels: Mapping[str, str] = field(default_factory=dict)
    runbook_url: str | None = None
    # Where the aggregator's pages are, for `generatorURL`.
    external_url: str = "http://127.0.0.1:8080"
    # How long a region must fail on its own (the target not down) before ServiceRegionDown.
    region_down_for: float = 0.0


@dataclass(frozen=True)
class Alert:
    """One alert the engine's state calls for."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    # When the condition began, by the engine's account; the book keeps the first one seen.
    starts_at: float
    generator_url: str

    @property
    def fingerprint(self) -> str:
        """The alert's identity: its labels, as Alertmanager sees it."""
        return fingerprint(self.labels)


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable identity for a label set."""
    return "\x1f".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _clock(ts: float | None) -> str:
    # A full date, to the second: an alert's text may be read days after it fired.
    return rfc3339(ts)[:-5] + "Z" if ts else "unknown"


def version_text(
    version: str | None, version_error: str | None, version_status: int | None = None
) -> str | None:
    """A region's version in words, with why the latest fetch failed; None when neither is known.

    A failed fetch keeps the last version known, so both can show: during an outage the
    version endpoint fails too, and the version that was running is what a rollback needs.
    The failed fetch's HTTP status follows its kind (`auth (403)`): 401 and 403 call for
    different fixes.
    """
    if version_error and version_status is not None:
        version_error = f"{version_error} ({version_status})"
    if version and version_error:
        return f"version {version} (last fetch: {version_error})"
    if version:
        return f"version {version}"
    if version_error:
        return f"version unknown: {version_error}"
    return None


def _recovering_from_outage(state: TargetSnapshot, r: RegionEvidence) -> bool:
    """Whether a region is still short of K successes after the whole target was down.

    It is healing from that outage, not failing on its own, so it raises no regional alert.
    """
    left = state.left_down_at
    return (
        left is not None
        and r.failing_since is not None
        and r.failing_since <= left
        # Once it fails again after the outage ended, it is failing on its own.
        and (r.last_failure_at is None or r.last_failure_at <= left)
    )


def _region_line(r: RegionEvidence) -> str:
    if r.stale:
        return f"{r.region}: no fresh data ({r.stale_reason})"
    if r.pending:
        return f"{r.region}: pending (not enough results yet to judge)"
    if r.failing and r.consecutive_failures == 0:
        text = (
            f"{r.region}: failing since {_clock(r.failing_since)}, recovering "
            f"({r.consecutive_successes} consecutive successes so far)"
        )
    elif r.failing:
        text = (
            f"{r.region}: failing since {_clock(r.failing_since)}, "
            f"{r.consecutive_failures} consecutive failures"
        )
        if r.error_kind:
            text += f", last error {r.error_kind}: {r.error}"
    else:
        text = f"{r.region}: ok ({r.consecutive_successes} consecutive successes)"
    version = version_text(r.version, r.version_error, r.version_status)
    if version:
        text += f", {version}"
    return text


def _versions(regions: Iterable[RegionEvidence]) -> str:
    evidence = list(regions)
    seen = sorted({r.version for r in evidence if r.version})
    if seen:
        return ", ".join(seen)
    # No version anywhere: say why, since a rollback decision starts from this line.
    why = "; ".join(f"{r.region}: {r.version_error}" for r in evidence if r.version_error)
    return f"unknown ({why})" if why else "unknown"


class _Builder:
    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings

    def alert(
        self,
        name: str,
        severity: str,
        sev: str | None,
        labels: dict[str, str],
        summary: str,
        description: str,
        starts_at: float,
        page: str,
        **extra: str,
    ) -> Alert:
        all_labels = {**self.settings.labels, "alertname": name, "severity": severity, **labels}
        if sev is not None:
            all_labels["sev"] = sev
        annotations = {"summary": summary, "description": description, **extra}
        if self.settings.runbook_url:
            annotations["runbook_url"] = self.settings.runbook_url
        base = self.settings.external_url.rstrip("/")
        return Alert(all_labels, annotations, starts_at, f"{base}{page}")


def desired_alerts(
    engine: Engine, now: float, settings: AlertSettings, on_error: OnTargetError | None = None
) -> dict[str, Alert]:
    """Every alert the engine's current state calls for, by fingerprint.

    Built one target at a time: with `on_error`, a target whose alerts cannot be built is
    reported there and the others' alerts are still returned.
    """
    desired = DesiredAlerts(settings)
    desired.refresh(engine, now, on_error)
    return desired.current()


class DesiredAlerts:
    """`desired_alerts`, kept per target so a result that changed one target re-judges one.

    Rebuilding every target's alerts on each transition made a backlog drain quadratic in the
    number of targets (each first result after a restart is a transition): `refresh` is for
    the clock tick, `refresh_targets` for a message.
    """

    def __init__(self, settings: AlertSettings) -> None:
        self._b = _Builder(settings)
        # Only targets that call for an alert: most are up, and cost nothing here.
        self._targets: dict[str, list[Alert]] = {}
        self._regions: list[Alert] = []

    def refresh(self, engine: Engine, now: float, on_error: OnTargetError | None = None) -> None:
        """Re-judge every target and region (alerts that come with time: staleness, delays)."""
        self._targets.clear()
        for state in engine.snapshots():
            self._target(engine, state, now, on_error)
        self.refresh_regions(engine, now)

    def refresh_targets(
        self,
        engine: Engine,
        names: Iterable[str],
        now: float,
        on_error: OnTargetError | None = None,
    ) -> None:
        """Re-judge these targets only; a target the engine no longer holds loses its alerts."""
        for name in names:
            self._targets.pop(name, None)
            state = engine.snapshot(name)
            if state is not None:
                self._target(engine, state, now, on_error)

    def refresh_regions(self, engine: Engine, now: float) -> None:
        """Re-judge the regions' ProbeOffline (each looks at every target: not per message)."""
        self._regions = [
            self._probe_offline(engine, region, now)
            for region in engine.regions
            if engine.region_stale(region, now) and _region_known(engine, region)
        ]

    def current(self) -> dict[str, Alert]:
        """The alerts called for as of the last refreshes, by fingerprint."""
        out = {a.fingerprint: a for alerts in self._targets.values() for a in alerts}
        out.update((a.fingerprint, a) for a in self._regions)
        return out

    def _target(
        self, engine: Engine, state: TargetSnapshot, now: float, on_error: OnTargetError | None
    ) -> None:
        # Most targets are up: skip them before any work is done on their behalf.
        if state.evaluation is None or (
            state.verdict not in (Verdict.DOWN, Verdict.DEGRADED) and not state.version_skew
        ):
            return
        try:
            alerts = _target_alerts(self._b, engine, state, now)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(state.name, exc)
            return
        if alerts:
            self._targets[state.name] = alerts

    def _probe_offline(self, engine: Engine, region: str, now: float) -> Alert:
        heard = engine.region_last_heard(region)
        return self._b.alert(
            PROBE_OFFLINE,
            "warning",
            None,
            {"region": region},
            summary=f"The probe in {region} is offline or silent",
            description=_offline_reason(engine, region),
            # Silent since it was last heard of; the book keeps it no later than now.
            starts_at=now if heard is None else heard,
            page="/",
        )


def restored_alerts(engine: Engine, settings: AlertSettings) -> dict[str, Alert]:
    """ServiceDown for every target a restored record says was down, as it was sent before.

    Seeding the book with these after a restart means an outage that ended while the
    aggregator was away is sent resolved, instead of left to expire in Alertmanager.
    """
    b = _Builder(settings)
    out = [
        _service_down(
            b,
            state,
            f"{state.name} is down",
            f"Down since {_clock(state.since)} (restored after a restart).",
        )
        for state in engine.snapshots()
        if state.evaluation is None and state.verdict is Verdict.DOWN
    ]
    return {a.fingerprint: a for a in out}


def _service_down(
    b: _Builder, state: TargetSnapshot, summary: str, description: str, **extra: str
) -> Alert:
    """The one way ServiceDown is built: a restored one must share the live one's labels."""
    return b.alert(
        SERVICE_DOWN,
        "critical",
        "SEV-1",
        {"target": state.name},
        summary=summary,
        description=description,
        starts_at=state.since,
        page=f"/targets/{state.name}",
        **extra,
    )


def _region_known(engine: Engine, region: str) -> bool:
    # A region that never said anything is a deploy in progress, not a dead probe.
    return bool(engine.probes(region)) or any(region in s.regions for s in engine.snapshots())


def _offline_reason(engine: Engine, region: str) -> str:
    probes = engine.probes(region)
    if probes and not any(p.online for p in probes):
        ids = ", ".join(sorted(p.probe_id for p in probes))
        return f"Probe {ids} in {region} said offline (or its connection died)."
    return f"No fresh results from {region} for any target."


def _target_alerts(b: _Builder, engine: Engine, state: TargetSnapshot, now: float) -> list[Alert]:
    name = state.name
    ev = engine.judge(name, now)
    page = f"/targets/{name}"
    lines = "\n".join(_region_line(r) for r in ev.regions)
    out: list[Alert] = []
    if state.verdict is Verdict.DOWN:
        failing = sorted(ev.failing)
        summary = f"{name} is down: failing from {len(failing)} of {len(ev.regions)} regions"
        quorum = "full"
        if state.quorum_degraded:
            quorum = "degraded"
            # Degraded by silent regions, or by regions still gathering evidence.
            why = []
            if ev.stale:
                why.append(f"{', '.join(sorted(ev.stale))} without fresh data")
            if waiting := sorted(ev.pending - ev.failing - ev.stale):
                why.append(f"{', '.join(waiting)} not judged yet")
            summary += f" (degraded quorum: {'; '.join(why) or 'too few regions judged'})"
        description = (
            f"Down since {_clock(state.since)}. Regions:\n{lines}\n"
            f"Versions seen: {_versions(ev.regions)}."
        )
        out.append(_service_down(b, state, summary, description, quorum=quorum))
    elif state.verdict is Verdict.DEGRADED:
        failing = sorted(r.region for r in ev.regions if r.failing and not r.stale)
        # Failing on its own since it turned failing (by our clock), or since the target left
        # down if later; the alert's start is when its failures began.
        left = state.left_down_at or 0.0
        for r in ev.regions:
            if r.region not in failing or _recovering_from_outage(state, r):
                continue
            if now - max(r.failing_at or now, left) < b.settings.region_down_for:
                continue
            alone_since = max(r.failing_since or now, left)
            summary = f"{name} is failing from {r.region}"
            if len(failing) == 1:
                summary += " only"
            else:
                summary += f" ({len(failing)} of {len(ev.regions)} failing: {', '.join(failing)})"
            out.append(
                b.alert(
                    SERVICE_REGION_DOWN,
                    "warning",
                    "SEV-3",
                    {"target": name, "region": r.region},
                    summary=summary,
                    description=f"{_region_line(r)}\nAll regions:\n{lines}",
                    starts_at=alone_since,
                    page=page,
                )
            )
    if state.version_skew:
        versions = "\n".join(f"{region}: {v}" for region, v in sorted(ev.versions.items()))
        out.append(
            b.alert(
                VERSION_SKEW,
                "info",
                "SEV-4",
                {"target": name},
                summary=f"{name} runs different versions across regions",
                description=f"Since {_clock(state.skew_since)}:\n{versions}",
                starts_at=state.skew_since or now,
                page=page,
            )
        )
    return out


@dataclass
class _Tracked:
    alert: Alert
    starts_at: float
    last_sent: float
    resolved_at: float | None = None


class AlertBook:
    """What has been sent to Alertmanager, and what is due."""

    def __init__(self, resend_interval: float, resolved_retention: float = 900.0) -> None:
        self.resend_interval = resend_interval
        self.resolved_retention = resolved_retention
        self._tracked: dict[str, _Tracked] = {}

    def seed(self, alerts: Mapping[str, Alert], now: float) -> None:
        """Take alerts as already firing (sent before a restart); nothing is sent for them."""
        for fp, alert in alerts.items():
            if fp not in self._tracked:
                self._tracked[fp] = _Tracked(alert, min(alert.starts_at, now), now)

    def update(self, desired: Mapping[str, Alert], now: float) -> list[dict[str, Any]]:
        """Fold in the alerts wanted now; returns Alertmanager payloads to send."""
        out: list[dict[str, Any]] = []
        for fp, alert in desired.items():
            t = self._tracked.get(fp)
            if t is None or t.resolved_at is not None:
                # A new alert, or one that fires again after resolving: a new startsAt, never
                # later than now (a probe's clock ahead of ours must not date it in the future).
                t = self._tracked[fp] = _Tracked(alert, min(alert.starts_at, now), now)
                out.append(self._payload(t, now))
                continue
            changed = alert.annotations.get("quorum") != t.alert.annotations.get("quorum")
            t.alert = alert
            if changed or now - t.last_sent >= self.resend_interval:
                t.last_sent = now
                out.append(self._payload(t, now))
        for fp, t in list(self._tracked.items()):
            if fp in desired:
                continue
            if t.resolved_at is None:
                t.resolved_at, t.last_sent = now, now
                out.append(self._payload(t, now))
            elif now - t.resolved_at >= self.resolved_retention:
                del self._tracked[fp]
            elif now - t.last_sent >= self.resend_interval:
                t.last_sent = now
                out.append(self._payload(t, now))
        return out

    def _payload(self, t: _Tracked, now: float) -> dict[str, Any]:
        ends = t.resolved_at if t.resolved_at is not None else now + 4 * self.resend_interval
        return {
            "labels": dict(t.alert.labels),
            "annotations": dict(t.alert.annotations),
            # Alertmanager refuses a batch holding an alert that ends before it starts.
            "startsAt": rfc3339(min(t.starts_at, ends)),
            "endsAt": rfc3339(ends),
            "generatorURL": t.alert.generator_url,
        }

    def firing(self) -> dict[str, int]:
        """How many alerts fire, by alertname."""
        counts = dict.fromkeys(ALERTNAMES, 0)
        for t in self._tracked.values():
            if t.resolved_at is None:
                name = t.alert.labels["alertname"]
                counts[name] = counts.get(name, 0) + 1
        return counts

    def active(self) -> list[tuple[Alert, float, float | None]]:
        """Every tracked alert with its startsAt and resolution time (None while firing)."""
        return [(t.alert, t.starts_at, t.resolved_at) for t in self._tracked.values()]
