"""The rule engine: results, presence and a clock in; verdicts and transitions out.

Pure: no asyncio, no MQTT, no HTTP, no wall clock. Every method takes `now`.

Per target and region a region is *failing* once its probe reports `failures` consecutive
failures, and stays failing until it reports `recoveries` consecutive successes. A region's
view is *stale* when its latest result is older than `stale_after` or its probe said
`offline`. Per target the verdict is `down` when at least `regions` regions are failing (or,
on a degraded quorum, when every fresh region is failing and at least `min_regions` are
fresh), `degraded` when some are failing, `up` when none is and enough are fresh, else
`unknown`.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aggregator.config import Rule
from wire.result import Phases, Presence, ProbeResult
from wire.state import RegionRecord, StateRecord, Verdict

__all__ = ["Verdict"]  # the engine's verdicts are the contract's


# Told which target failed and why, when work is done one target at a time.
OnTargetError = Callable[[str, Exception], None]


def _raise(_target: str, exc: Exception) -> None:
    raise exc


class Change(enum.StrEnum):
    """What kind of thing a transition changed; the `kind` label of `vigil_transitions_total`."""

    VERDICT = "verdict"
    QUORUM = "quorum"
    REGION = "region"
    STALE = "stale"
    VERSION_SKEW = "version_skew"
    PROBE = "probe"


# An `offline` presence counts only after this long, so a broker's shutdown (which sends
# every probe's last will at once, then drops the aggregator) is not mistaken for probes dying.
PRESENCE_SETTLE_S = 2.0

# How far back a streak may place "failing since" when no earlier result was seen: a year.
MAX_LOOKBACK_S = 365 * 24 * 3600.0

# Changes that alter what a target's state record says.
RECORDED = frozenset({Change.VERDICT, Change.QUORUM, Change.REGION, Change.VERSION_SKEW})


# Forgotten targets remembered at most (see `Engine.expire_tombstones`).
MAX_TOMBSTONES = 100_000


class Applied(enum.StrEnum):
    """What became of one result."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    OLDER = "older"
    # A new target (or a region new to it) beyond `max_targets`/`max_targets_per_region`.
    REFUSED = "refused"
    # A result from before the target was forgotten (a retained one, after a restart).
    FORGOTTEN = "forgotten"


def next_failing(prior: bool, failures: int, successes: int, rule: Rule) -> bool:
    """A region's failing flag after a result with these streaks (the hysteresis)."""
    if failures >= rule.failures:
        return True
    if successes >= rule.recoveries:
        return False
    return prior


@dataclass(slots=True)
class RegionView:
    """What one region last said about one target. Compact: there are targets x regions."""

    probe_id: str = ""
    boot_id: str = ""
    seq: int = 0
    scheduled_at: float = 0.0
    started_at: float = 0.0
    duration_ms: float = 0.0
    ok: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    status_code: int | None = None
    error_kind: str | None = None
    error: str | None = None
    version: str | None = None
    version_since: float | None = None
    # Why the latest version fetch gave no version (a VersionErrorKind value); `version`
    # then still holds the last one known.
    version_error: str | None = None
    # The HTTP status behind `version_error` (403 for a refused key), when one came.
    version_status: int | None = None
    # The health endpoint that gave the latest result (a profile may move between several).
    health_path: str | None = None
    failing: bool = False
    failing_since: float | None = None
    # Learned from consecutive results of one probe process: seconds between checks.
    interval: float | None = None
    # The latest result's phase timings, shared with the parsed result (not copied).
    phases: Phases | None = None
    # When the latest result arrived, by the aggregator's clock (see Engine.apply_result).
    received_at: float = 0.0
    # When the current failure streak's first failure started, if that result was seen.
    failures_began: float | None = None
    # By the aggregator's clock: when the region last turned failing, and last failed.
    failing_at: float | None = None
    last_failure_at: float | None = None
    # By the results' clock (never later than their arrival): when the region turned failing
    # (the start of the check that completed the streak) and when it last turned ok again.
    # Verdicts are dated from these, so aggregators that saw the same results agree.
    became_failing: float | None = None
    recovered_at: float | None = None
    # Conclusive results seen since this aggregator started.
    results: int = 0
    # Whether this region has given enough evidence to judge: N failures, K successes, or a
    # restored flag. Until then (e.g. 1-2 failures right after a start) it is `pending`:
    # neither ok nor failing, so a verdict never rests on it.
    decided: bool = False


@dataclass(frozen=True, slots=True)
class RegionEvidence:
    """One region's part in a verdict."""

    region: str
    failing: bool
    stale: bool
    stale_reason: str | None
    consecutive_failures: int
    consecutive_successes: int
    failing_since: float | None
    status_code: int | None
    error_kind: str | None
    error: str | None
    version: str | None
    last_result_at: float | None
    pending: bool = False
    failing_at: float | None = None
    last_failure_at: float | None = None
    version_error: str | None = None
    version_status: int | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A target's verdict with the evidence for it."""

    verdict: Verdict
    quorum_degraded: bool
    failing: frozenset[str]
    fresh: frozenset[str]
    stale: frozenset[str]
    regions: tuple[RegionEvidence, ...]
    versions: Mapping[str, str]
    required: int
    min_regions: int
    pending: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Transition:
    """A change worth telling someone about, with its evidence."""

    kind: Change
    target: str | None
    region: str | None
    old: str
    new: str
    at: float
    since: float
    evaluation: Evaluation | None = None


@dataclass(slots=True)
class ProbeState:
    """A probe's latest presence."""

    region: str
    probe_id: str
    boot_id: str
    online: bool
    at: float
    targets: dict[str, float]
    # When the latest presence arrived, by the aggregator's clock.
    received_at: float = 0.0


@dataclass(slots=True)
class TargetState:
    """Everything the engine keeps about one target."""

    name: str
    regions: dict[str, RegionView] = field(default_factory=dict)
    # Regions whose probe lists this target in its presence record.
    expected: set[str] = field(default_factory=set)
    verdict: Verdict = Verdict.UNKNOWN
    since: float = 0.0
    quorum_degraded: bool = False
    failing: frozenset[str] = frozenset()
    stale: frozenset[str] = frozenset()
    skew_since: float | None = None
    version_skew: bool = False
    last_seen: float = 0.0
    evaluation: Evaluation | None = None
    # Region failing flags from a restored state record, for regions with no result yet.
    restored: dict[str, tuple[bool, float | None]] = field(default_factory=dict)
    # When the verdict last left `down`: regions still recovering from that outage raise
    # no regional alert of their own.
    left_down_at: float | None = None
    # Whether a result changed what the rule reads (a failing flag, a region's freshness,
    # evidence, version or probe) since the last evaluation; see `needs_evaluation`.
    changed: bool = True


class RegionSnapshot(Protocol):
    """Read-only view of a `RegionView`, for views and metrics."""

    @property
    def probe_id(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def duration_ms(self) -> float: ...
    @property
    def ok(self) -> bool: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def status_code(self) -> int | None: ...
    @property
    def error_kind(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def version_since(self) -> float | None: ...
    @property
    def version_error(self) -> str | None: ...
    @property
    def version_status(self) -> int | None: ...
    @property
    def health_path(self) -> str | None: ...
    @property
    def failing(self) -> bool: ...
    @property
    def failing_since(self) -> float | None: ...
    @property
    def phases(self) -> Phases | None: ...


class TargetSnapshot(Protocol):
    """Read-only view of a target's state: what views, alerts and metrics may read.

    A protocol over the engine's own objects, so reading costs no copy; mypy keeps readers
    from writing.
    """

    @property
    def name(self) -> str: ...
    @property
    def regions(self) -> Mapping[str, RegionSnapshot]: ...
    @property
    def verdict(self) -> Verdict: ...
    @property
    def since(self) -> float: ...
    @property
    def quorum_degraded(self) -> bool: ...
    @property
    def skew_since(self) -> float | None: ...
    @property
    def version_skew(self) -> bool: ...
    @property
    def evaluation(self) -> Evaluation | None: ...
    @property
    def left_down_at(self) -> float | None: ...


class ProbeSnapshot(Protocol):
    """Read-only view of a probe's latest presence."""

    @property
    def region(self) -> str: ...
    @property
    def probe_id(self) -> str: ...
    @property
    def boot_id(self) -> str: ...
    @property
    def online(self) -> bool: ...
    @property
    def at(self) -> float: ...
    @property
    def targets(self) -> Mapping[str, float]: ...


class Engine:
    """Keeps every target's state and turns inputs into transitions."""

    def __init__(
        self,
        regions: Sequence[str],
        rule_for: Callable[[str], Rule],
        *,
        default_interval: float,
        forget_after: float,
        max_clock_skew: float = 30.0,
        max_targets: int | None = None,
        max_targets_per_region: int | None = None,
    ) -> None:
        self.regions = tuple(regions)
        # Caps, so a flood of made-up target names (a broken or hostile probe) cannot grow
        # memory, /metrics and the page without bound. None: no cap.
        self._max_targets = max_targets
        self._max_per_region = max_targets_per_region
        # How many targets each region reports (has a view of, or lists in its presence).
        self._per_region: collections.Counter[str] = collections.Counter()
        # Targets refused by the caps, by region ("" for state records), for the metrics.
        self.refused: collections.Counter[str] = collections.Counter()
        self._max_clock_skew = max_clock_skew
        # When the aggregator could first have heard anything: silence counts from here.
        self._listening_since: float | None = None
        # While cut off from the broker (and one grace after), time stops for staleness.
        self._held_at: float | None = None
        self._hold_until: float | None = None
        self._grace = 0.0
        self._connected = True
        self._rule_for = rule_for
        self._default_interval = default_interval
        self._forget_after = forget_after
        self._targets: dict[str, TargetState] = {}
        # Targets forgotten, and when: results that started before are old news.
        self._forgotten: dict[str, float] = {}
        self._probes: dict[tuple[str, str], ProbeState] = {}

    def _target(self, name: str, now: float, region: str | None) -> TargetState | None:
        """The target's state, created if the caps allow; None (counted) when refused.

        `region`: the region about to report this target (it will hold a view of it or
        expect it), which counts against that region's cap the first time.
        """
        state = self._targets.get(name)
        joins = region is not None and (
            state is None or (region not in state.regions and region not in state.expected)
        )
        if joins and region is not None:
            cap = self._max_per_region
            if cap is not None and self._per_region[region] >= cap:
                self.refused[region] += 1
                return None
        if state is None:
            if self._max_targets is not None and len(self._targets) >= self._max_targets:
                self.refused[region or ""] += 1
                return None
            state = self._targets[name] = TargetState(name=name, since=now, last_seen=now)
        if joins and region is not None:
            self._per_region[region] += 1
        return state

    def targets_in(self, region: str) -> int:
        """How many targets `region` reports, as counted against its cap."""
        return self._per_region[region]

    # -- read-only snapshot API, for views, alerts and metrics --------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def names(self) -> list[str]:
        """Every known target's name, sorted."""
        return sorted(self._targets)

    def held(self) -> list[str]:
        """Every known target's name, oldest first (no sort: for walking them all)."""
        return list(self._targets)

    def snapshot(self, name: str) -> TargetSnapshot | None:
        """A target's state, read-only; None when unknown."""
        return self._targets.get(name)

    def snapshots(self) -> Iterator[TargetSnapshot]:
        """Every target's state, read-only, in no particular order."""
        return iter(self._targets.values())

    def probes(self, region: str | None = None) -> list[ProbeSnapshot]:
        """Every probe's latest presence, or those of one region."""
        return [p for p in self._probes.values() if region is None or p.region == region]

    def record(self, name: str, now: float, aggregator: str) -> StateRecord | None:
        """The retained state record of a target's current state; None when unknown."""
        state = self._targets.get(name)
        if state is None:
            return None
        return StateRecord(
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

    # -- the aggregator's own connection ---------------------------------------------------

    def listening(self, now: float) -> None:
        """The aggregator can hear the probes from `now` on: silence counts from here."""
        if self._listening_since is None:
            self._listening_since = now

    def cut_off(self, now: float) -> None:
        """The aggregator lost the broker: nothing goes stale or offline for lack of news.

        The hold lasts until `reconnected` plus its grace, since the news could not reach it.
        A cut during that grace does not extend it: a flapping connection holds for a bounded
        time per cycle, never forever.
        """
        self._connected = False
        if self._held_at is None:
            self._held_at, self._hold_until = now, None

    def reconnected(self, now: float, grace: float) -> None:
        """The broker is back: the hold ends `grace` seconds from now, once caught up."""
        self._connected = True
        if self._held_at is not None and self._hold_until is None:
            self._hold_until, self._grace = now + grace, grace

    def _clock_for_silence(self, now: float) -> float:
        """`now` for judging silence: stopped at the cut while the hold lasts."""
        held, until = self._held_at, self._hold_until
        if held is None:
            return now
        if until is not None and (now >= until or until - now > self._grace):
            # The grace is over (or the wall clock stepped back past it).
            if self._connected:
                self._held_at = self._hold_until = None
                return now
            # Cut off again meanwhile: a new hold from where this one ended, so silence
            # still counts across a flapping connection, just more slowly.
            self._held_at, self._hold_until = until, None
            return min(now, until)
        return min(now, held)

    def _probe_offline(self, probe: ProbeState | None, now: float) -> bool:
        """A probe counts as offline once its `offline` has settled, and not from a cut.

        The broker publishes every probe's last will as it shuts down, just before the
        aggregator loses it: an `offline` that arrives within PRESENCE_SETTLE_S of a cut
        (before or during it) is the broker's doing, not the probe's.
        """
        if probe is None or probe.online:
            return False
        if now - probe.received_at < PRESENCE_SETTLE_S:
            return False
        held = self._held_at
        return held is None or probe.received_at < held - PRESENCE_SETTLE_S

    # -- inputs ---------------------------------------------------------------------------

    def apply_result(self, r: ProbeResult, now: float) -> Applied:
        """Fold one result into its region's view; duplicates and older results change nothing.

        Does not evaluate the verdict: call `evaluate` (after a batch, or per result).
        """
        forgotten_at = self._forgotten.get(r.target)
        if forgotten_at is not None:
            # Never a live result: a tombstone dated by a clock that jumped ahead must not
            # set aside what probes report now (a real outage would go unjudged).
            if r.started_at <= min(forgotten_at, now - self._max_clock_skew):
                return Applied.FORGOTTEN
            del self._forgotten[r.target]  # checked again since: it is back
        admitted = self._target(r.target, now, r.region)
        if admitted is None:
            return Applied.REFUSED
        state = admitted
        view = state.regions.get(r.region)
        rule = self._rule_for(r.target)
        interval: float | None = None
        restored: tuple[bool, float | None] | None = None
        same_run = view is not None and (view.probe_id, view.boot_id) == (r.probe_id, r.boot_id)
        # A routine result: same probe run, a region judged, conclusive, and as fresh (or as
        # stale: a backlog's old results) after it as before. Unless it turns the flag or the
        # version, judging the target again would find nothing new (the clock tick re-judges
        # what time changes).
        quiet_now = self._clock_for_silence(now)
        routine = view is not None and same_run and view.decided and not r.inconclusive
        was_stale = routine and self._silent(state, rule, r.region, quiet_now)
        old_version = view.version if view is not None else None
        if view is not None:
            if same_run:
                if r.seq == view.seq:
                    return Applied.DUPLICATE
                if r.seq < view.seq and r.started_at <= view.started_at:
                    return Applied.OLDER
                # A lower seq that is newer by the clock means the higher one was not the
                # probe's (a forged seq must not mute a region until its probe restarts).
                if r.seq > view.seq:
                    interval = (r.scheduled_at - view.scheduled_at) / (r.seq - view.seq)
            elif r.started_at <= view.started_at:
                return Applied.OLDER
            prior, prior_since = view.failing, view.failing_since
        else:
            restored = state.restored.pop(r.region, None)
            prior, prior_since = restored or (False, None)
        if r.inconclusive:
            # The probe failed, not the target: keep the region's judgement as it was.
            failing = prior
        else:
            failing = next_failing(prior, r.consecutive_failures, r.consecutive_successes, rule)
        if r.interval is not None:
            interval = r.interval  # the probe's own word beats any guess from seq and time
        # When the failure streak began, if the aggregator saw its first failure (else None,
        # and "since" is estimated below).
        began: float | None = None
        if r.consecutive_failures == 1:
            began = min(r.started_at, now)
        elif (
            r.consecutive_failures > 1
            and view is not None
            and same_run
            and r.consecutive_failures - view.consecutive_failures == r.seq - view.seq
        ):
            began = view.failures_began  # the same streak, no check missed in between
        if failing and not prior:
            if began is not None:
                prior_since = began  # seen: exact, whatever the spacing of the checks
            else:
                step = interval or self._interval(state, r.region)
                # Bounded: a streak can be long (or forged); "since" stays a recent time.
                lookback = min((r.consecutive_failures - 1) * step, MAX_LOOKBACK_S)
                # Never later than now: a probe clock ahead must not date it in the future.
                prior_since = max(0.0, min(r.started_at, now) - lookback)
        version: str | None = r.version
        version_since: float | None = r.started_at
        if view is not None:
            if r.version is None or r.version == view.version:
                # A failed version fetch says nothing new about the version.
                version, version_since = view.version, view.version_since
            if interval is None or interval <= 0:
                interval = view.interval
        if view is None:
            # A restored record is evidence enough: the region was judged before a restart.
            view = state.regions[r.region] = RegionView(decided=restored is not None)
        if failing and not prior:
            # The check that completed the streak: this one, or (when earlier ones were not
            # seen: a start, a gap) as many intervals back as the streak is longer than needed.
            step = interval or self._interval(state, r.region)
            extra = min(max(0, r.consecutive_failures - rule.failures) * step, MAX_LOOKBACK_S)
            became = min(r.started_at, now) - extra
            view.became_failing = max(became, prior_since) if prior_since is not None else became
        elif failing and view.became_failing is None:
            # A flag restored from a record: the streak's start is the best date known.
            view.became_failing = prior_since
        elif not failing:
            view.became_failing = None
        if prior and not failing and not r.inconclusive:
            view.recovered_at = min(r.started_at, now)
        # Updated in place: this runs for every result, and there are targets x regions.
        view.probe_id, view.boot_id, view.seq = r.probe_id, r.boot_id, r.seq
        view.scheduled_at, view.started_at = r.scheduled_at, r.started_at
        view.duration_ms, view.ok, view.status_code = r.duration_ms, r.ok, r.status_code
        view.error_kind = r.error_kind.value if r.error_kind else None
        view.error = r.error
        view.version, view.version_since = version, version_since
        view.version_error = r.version_error.value if r.version_error else None
        view.version_status = r.version_status if r.version_error else None
        view.health_path = r.health_path
        view.failing, view.failing_since = failing, prior_since if failing else None
        view.interval = interval
        view.phases = r.phases
        # Only a conclusive result is news: a probe that can only say "inconclusive" keeps
        # its streaks and goes stale like a silent one.
        if not r.inconclusive:
            view.consecutive_failures = r.consecutive_failures
            view.consecutive_successes = r.consecutive_successes
            view.failures_began = began
            # A probe's clock may only make a result older than its arrival, and only beyond
            # the skew tolerance: staleness follows the aggregator's clock, so a probe a few
            # seconds behind never looks silent, while a retained or queued result that is
            # really old still counts as old.
            view.received_at = min(now, r.ended_at + self._max_clock_skew)
            view.results += 1
            if not r.ok:
                view.last_failure_at = now
        if failing and not prior:
            view.failing_at = now
        view.decided = (
            view.decided
            or failing
            or (not r.inconclusive and r.consecutive_successes >= rule.recoveries)
            # N + K results without either streak: a flapping region, judged ok-but-flaky
            # rather than pending forever.
            or view.results >= rule.failures + rule.recoveries
        )
        if not (
            routine
            and failing == prior
            and view.version == old_version
            and self._silent(state, rule, r.region, quiet_now) == was_stale
        ):
            state.changed = True
        state.last_seen = now
        return Applied.APPLIED

    def _silent(self, state: TargetState, rule: Rule, region: str, quiet_now: float) -> bool:
        """Whether a region's latest result is too old to count (as `_classify` judges it)."""
        view = state.regions[region]
        return quiet_now - view.received_at > self._stale_after(state, rule, region)

    def needs_evaluation(self, name: str) -> bool:
        """Whether a result since the last `evaluate` of `name` could change its verdict.

        False for the routine result (a region that stays as judged): the per-message path
        skips `evaluate` for it, and the clock tick judges every target regardless.
        """
        state = self._targets.get(name)
        return state is None or state.changed

    def apply_presence(self, p: Presence, now: float) -> list[Transition]:
        """Record a probe's presence; returns a `probe` transition when it came or went."""
        key = (p.region, p.probe_id)
        old = self._probes.get(key)
        online = p.status == "online"
        targets = dict(p.targets) if online else (old.targets if old else {})
        self._probes[key] = ProbeState(
            p.region, p.probe_id, p.boot_id, online, p.at, targets, received_at=now
        )
        for name in p.targets:
            # An online probe checking the target outranks any tombstone's date.
            self._forgotten.pop(name, None)
            state = self._target(name, now, p.region)
            if state is None:
                continue
            state.expected.add(p.region)
            state.last_seen = now
        was = None if old is None else old.online
        if was == online:
            return []
        return [
            Transition(
                kind=Change.PROBE,
                target=None,
                region=p.region,
                old="unknown" if was is None else ("online" if was else "offline"),
                new="online" if online else "offline",
                at=now,
                since=p.at,
            )
        ]

    def restore(self, record: StateRecord) -> None:
        """Take back the last recorded verdict of a target, as after a restart.

        Used before the first evaluation only. Region flags go through the same hysteresis
        as results, so the outcome does not depend on whether the record or the region's
        retained result arrives first.
        """
        if record.forgotten_at is not None:
            self._restore_tombstone(record.target, record.forgotten_at)
            return
        state = self._target(record.target, record.since, None)
        if state is None or state.evaluation is not None:
            return
        state.verdict = record.verdict
        state.since = record.since
        state.quorum_degraded = record.quorum_degraded
        state.skew_since = record.skew_since
        state.failing = frozenset(r for r, rr in record.regions.items() if rr.failing)
        rule = self._rule_for(record.target)
        for region, rr in record.regions.items():
            view = state.regions.get(region)
            if view is None:
                state.restored[region] = (rr.failing, rr.failing_since)
                continue
            failing = next_failing(
                rr.failing, view.consecutive_failures, view.consecutive_successes, rule
            )
            view.decided = True
            if failing and view.failing_at is None:
                view.failing_at = rr.failing_since or record.since
            if failing and view.became_failing is None:
                view.became_failing = rr.failing_since or record.since
            elif not failing:
                view.became_failing = None
            if failing and rr.failing and rr.failing_since is not None:
                estimate = view.failing_since
                # A retained result that came first dates the streak by counting intervals
                # back, off by the checks' own lateness; the record holds the date the last
                # process saw. The same streak (within an interval of it) keeps that date.
                step = view.interval or self.interval(record.target, region)
                if estimate is None or abs(estimate - rr.failing_since) <= step + 1.0:
                    view.failing_since = rr.failing_since
                else:
                    view.failing_since = min(rr.failing_since, estimate)
            elif not failing:
                view.failing_since = None
            view.failing = failing

    # -- judgement --------------------------------------------------------------------------

    def interval(self, target: str, region: str) -> float:
        """The probe's check interval for a target in a region, as best known."""
        return self._interval(self._targets[target], region)

    def stale_after(self, target: str, region: str) -> float:
        """How long a region may stay silent about a target before its view is stale."""
        return self._stale_after(self._targets[target], self._rule_for(target), region)

    def _stale_after(self, state: TargetState, rule: Rule, region: str) -> float:
        return rule.stale_after or 3 * self._interval(state, region)

    def _interval(self, state: TargetState, region: str) -> float:
        view = state.regions.get(region)
        if view is not None and view.interval:
            return view.interval
        for probe in self._probes.values():
            if probe.region == region and state.name in probe.targets:
                return probe.targets[state.name]
        return self._default_interval

    def _region_offline(self, region: str, view: RegionView | None, now: float) -> bool:
        if view is None:
            return False
        return self._probe_offline(self._probes.get((region, view.probe_id)), now)

    def _classify(
        self, state: TargetState, rule: Rule, now: float
    ) -> tuple[set[str], set[str], dict[str, str], dict[str, str], set[str], set[str]]:
        """Fresh, failing, stale (with the reason), fresh versions, pending, and unproven regions.

        Unproven: pending with no passing check. A region is pending while it has not given
        enough evidence (see `RegionView.decided`), or has said nothing yet but the aggregator
        has not listened for `stale_after`.
        """
        fresh: set[str] = set()
        failing: set[str] = set()
        stale: dict[str, str] = {}
        versions: dict[str, str] = {}
        pending: set[str] = set()
        # Pending regions whose latest conclusive check did not pass (or that have none):
        # like stale ones, they must not hide an outage the other regions see.
        unproven: set[str] = set()
        quiet_now = self._clock_for_silence(now)
        for region in self.regions:
            view = state.regions.get(region)
            stale_after = self._stale_after(state, rule, region)
            if view is None:
                if self._listening_since is not None and (
                    quiet_now - self._listening_since < stale_after
                ):
                    pending.add(region)
                    unproven.add(region)
                else:
                    stale[region] = "no results"
                continue
            if self._region_offline(region, view, quiet_now):
                stale[region] = "probe offline"
                continue
            age = quiet_now - view.received_at
            if age > stale_after:
                stale[region] = f"no result for {age:.0f}s"
                continue
            if not view.decided:
                pending.add(region)
                if view.results == 0 or view.consecutive_failures > 0:
                    unproven.add(region)
                continue
            fresh.add(region)
            if view.failing:
                failing.add(region)
            if view.version is not None:
                versions[region] = view.version
        return fresh, failing, stale, versions, pending, unproven

    @staticmethod
    def _verdict(
        fresh: set[str],
        failing: set[str],
        stale: Mapping[str, str],
        rule: Rule,
        unproven: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[Verdict, bool]:
        if len(failing) >= rule.regions:
            return Verdict.DOWN, False
        silent = bool(stale) or bool(unproven)
        if silent and failing and failing == fresh and len(fresh) >= rule.min_regions:
            # One dead (or not yet judged) probe must not hide a real outage.
            return Verdict.DOWN, True
        if failing:
            return Verdict.DEGRADED, False
        if len(fresh) >= rule.min_regions:
            return Verdict.UP, False
        return Verdict.UNKNOWN, False

    def judge(self, name: str, now: float) -> Evaluation:
        """The verdict for a target as of `now` with each region's evidence; changes nothing."""
        state = self._targets[name]
        rule = self._rule_for(name)
        fresh, failing, stale, versions, pending, unproven = self._classify(state, rule, now)
        verdict, quorum_degraded = self._verdict(fresh, failing, stale, rule, unproven)
        evidence = []
        for region in self.regions:
            view = state.regions.get(region)
            evidence.append(
                RegionEvidence(
                    region=region,
                    failing=bool(view and view.failing),
                    stale=region in stale,
                    stale_reason=stale.get(region),
                    consecutive_failures=view.consecutive_failures if view else 0,
                    consecutive_successes=view.consecutive_successes if view else 0,
                    failing_since=view.failing_since if view else None,
                    status_code=view.status_code if view else None,
                    error_kind=view.error_kind if view else None,
                    error=view.error if view else None,
                    version=view.version if view else None,
                    last_result_at=view.started_at if view else None,
                    pending=region in pending,
                    failing_at=view.failing_at if view else None,
                    last_failure_at=view.last_failure_at if view else None,
                    version_error=view.version_error if view else None,
                    version_status=view.version_status if view else None,
                )
            )
        return Evaluation(
            verdict=verdict,
            quorum_degraded=quorum_degraded,
            failing=frozenset(failing),
            fresh=frozenset(fresh),
            stale=frozenset(stale),
            regions=tuple(evidence),
            versions=versions,
            required=rule.regions,
            min_regions=rule.min_regions,
            pending=frozenset(pending),
        )

    def evaluate(self, name: str, now: float) -> list[Transition]:
        """Judge a target and return what changed since its last evaluation.

        The common case, nothing changed, costs one pass over the regions and builds no
        evidence; evidence is built only for the transitions that carry it.
        """
        state = self._targets[name]
        state.changed = False
        rule = self._rule_for(name)
        fresh, failing, stale, versions, _pending, unproven = self._classify(state, rule, now)
        verdict, quorum_degraded = self._verdict(fresh, failing, stale, rule, unproven)
        if len(set(versions.values())) > 1:
            state.skew_since = state.skew_since if state.skew_since is not None else now
        else:
            state.skew_since = None
        skew = state.skew_since is not None and now - state.skew_since >= rule.version_skew_after
        if (
            state.evaluation is not None
            and verdict is state.verdict
            and quorum_degraded == state.quorum_degraded
            and skew == state.version_skew
            and failing == state.failing
            and stale.keys() == state.stale
        ):
            return []
        ev = self.judge(name, now)
        out: list[Transition] = []

        def emit(kind: Change, region: str | None, old: str, new: str, since: float) -> None:
            out.append(Transition(kind, name, region, old, new, now, since, ev))

        for region in sorted(ev.failing - state.failing):
            view = state.regions[region]
            emit(Change.REGION, region, "ok", "failing", view.failing_since or now)
        for region in sorted(state.failing - ev.failing):
            emit(Change.REGION, region, "failing", "ok", now)
        if state.evaluation is not None:
            # A region that never reported is not "going stale"; nor is anything on the
            # first evaluation, which has nothing to compare with.
            for region in sorted(ev.stale - state.stale):
                if region in state.regions:
                    emit(Change.STALE, region, "fresh", "stale", now)
            for region in sorted(state.stale - ev.stale):
                emit(Change.STALE, region, "stale", "fresh", now)
        if skew != state.version_skew:
            since = state.skew_since or now
            emit(
                Change.VERSION_SKEW, None, str(state.version_skew).lower(), str(skew).lower(), since
            )
            state.version_skew = skew
        if ev.verdict != state.verdict:
            since = self._verdict_since(state, ev, rule, now)
            emit(Change.VERDICT, None, state.verdict.value, ev.verdict.value, since)
            if state.verdict is Verdict.DOWN:
                # By this aggregator's clock, like `last_failure_at` it is compared with.
                state.left_down_at = now
            state.verdict, state.since = ev.verdict, since
        elif ev.quorum_degraded != state.quorum_degraded and ev.verdict is Verdict.DOWN:
            emit(
                Change.QUORUM,
                None,
                _quorum(state.quorum_degraded),
                _quorum(ev.quorum_degraded),
                now,
            )
        state.quorum_degraded = ev.quorum_degraded
        state.failing, state.stale, state.evaluation = ev.failing, ev.stale, ev
        return out

    @staticmethod
    def _verdict_since(state: TargetState, ev: Evaluation, rule: Rule, now: float) -> float:
        """When the verdict `ev` began: from the results where they say it, never after `now`.

        So two aggregators that saw the same results date it alike, whenever each heard them
        (ServiceDown's startsAt is this). `down`: when the quorum was reached, the
        `regions`-th earliest time a failing region turned failing (on a degraded quorum the
        latest, since every fresh region had to fail). `degraded` coming from `up` or
        `unknown`: when the first region turned failing. Leaving `down` or `degraded` because
        regions recovered: when the last of them did. Anything else comes from staleness,
        which is judged by this aggregator's clock, so: `now`.
        """
        at = now
        turned = sorted(_became_failing(state.regions[r], now) for r in ev.failing)
        left = [state.regions.get(r) for r in state.failing - ev.failing]
        if ev.verdict is Verdict.DOWN and turned:
            at = turned[-1] if ev.quorum_degraded else turned[min(rule.regions, len(turned)) - 1]
        elif ev.verdict is Verdict.DEGRADED and state.verdict is not Verdict.DOWN and turned:
            at = turned[0]
        elif (
            ev.verdict in (Verdict.UP, Verdict.DEGRADED)
            and left
            and all(v is not None and not v.failing and v.recovered_at for v in left)
        ):
            # Recovery cannot predate the verdict it ends.
            at = max(max(v.recovered_at or 0.0 for v in left if v), state.since)
        return min(at, now)

    def evaluate_all(
        self, now: float, on_error: OnTargetError = _raise, names: Iterable[str] | None = None
    ) -> list[Transition]:
        """Evaluate every target, e.g. on a clock tick, since staleness comes with time.

        `names`: only these (those still held), for a tick taken a slice at a time. One
        target at a time: an error in one goes to `on_error` and the others are still judged.
        """
        out: list[Transition] = []
        for name in list(self._targets) if names is None else names:
            if name not in self._targets:  # forgotten since the slice was cut
                continue
            try:
                out.extend(self.evaluate(name, now))
            except Exception as exc:  # isolation: one broken target must not stop the rest
                on_error(name, exc)
        return out

    def forget(self, now: float) -> list[str]:
        """Drop targets nobody has reported for `forget_after`; returns their names.

        Each is remembered as forgotten at `now` (see `tombstone`), so its retained results
        do not bring it back.
        """
        gone = [n for n, s in self._targets.items() if now - s.last_seen > self._forget_after]
        for name in gone:
            self._drop(name)
            self._forgotten[name] = now
        return gone

    def _drop(self, name: str) -> None:
        state = self._targets.pop(name)
        for region in state.regions.keys() | state.expected:
            self._per_region[region] -= 1

    def tombstone(self, name: str, now: float, aggregator: str) -> StateRecord | None:
        """The retained record that keeps a forgotten target forgotten across restarts."""
        at = self._forgotten.get(name)
        if at is None:
            return None
        return StateRecord(
            target=name,
            verdict=Verdict.UNKNOWN,
            since=at,
            updated_at=now,
            aggregator=aggregator,
            forgotten_at=at,
        )

    def expire_tombstones(self, older_than: float, now: float) -> list[str]:
        """Stop remembering some forgotten targets; returns their names.

        Those forgotten before `older_than` (past `max_result_age` their retained results are
        rejected as too old anyway), those dated ahead of `now` (a clock that jumped), and
        the oldest beyond `MAX_TOMBSTONES` (a region inventing names cannot grow the memory
        or the broker's retained store without bound).
        """
        ahead = now + self._max_clock_skew
        expired = [n for n, at in self._forgotten.items() if at < older_than or at > ahead]
        for name in expired:
            del self._forgotten[name]
        excess = len(self._forgotten) - MAX_TOMBSTONES
        if excess > 0:
            oldest = sorted(self._forgotten, key=self._forgotten.__getitem__)[:excess]
            for name in oldest:
                del self._forgotten[name]
            expired += oldest
        return expired

    def _restore_tombstone(self, name: str, forgotten_at: float) -> None:
        # Retained results may have arrived before the tombstone: they are the old news it
        # speaks of unless one started after it, or a probe online now still lists the target.
        self._forgotten[name] = max(forgotten_at, self._forgotten.get(name, forgotten_at))
        state = self._targets.get(name)
        if state is None:
            return
        if state.expected or any(v.started_at > forgotten_at for v in state.regions.values()):
            del self._forgotten[name]
            return
        self._drop(name)

    def region_last_heard(self, region: str) -> float | None:
        """When `region` was last heard of, by the probes' clock; None if it never was.

        The end of its latest result, or a later `offline` its probe published: ProbeOffline
        dates from this, so aggregators that heard the same messages agree on its startsAt.
        """
        heard = [
            view.started_at + view.duration_ms / 1000
            for state in self._targets.values()
            if (view := state.regions.get(region)) is not None
        ]
        heard += [p.at for p in self._probes.values() if p.region == region and not p.online]
        return max(heard, default=None)

    def region_stale(self, region: str, now: float) -> bool:
        """Whether a region says nothing useful: its probes offline or every view stale.

        Silence counts from when the aggregator could first have heard the region, and not
        while it is cut off from the broker.
        """
        quiet_now = self._clock_for_silence(now)
        probes = [p for p in self._probes.values() if p.region == region]
        if probes and all(self._probe_offline(p, quiet_now) for p in probes):
            return True
        seen = [s for s in self._targets.values() if region in s.regions]
        if not seen:
            since = self._listening_since
            return since is None or quiet_now - since >= 3 * self._default_interval
        return all(region in s.stale for s in seen if s.evaluation is not None) and any(
            s.evaluation is not None for s in seen
        )


def _became_failing(view: RegionView, now: float) -> float:
    """When a failing region turned failing, by the results' clock, as best known."""
    if view.became_failing is not None:
        return view.became_failing
    return view.failing_since if view.failing_since is not None else now


def _quorum(degraded: bool) -> str:
    return "degraded" if degraded else "full"
