"""Building probe results and engines for rule-engine tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aggregator.config import AggregatorConfig, Rule
from aggregator.core.rules import Engine, TargetState, Transition, Verdict
from wire.result import ErrorKind, Presence, ProbeResult

REGIONS = ("us-east", "eu-west", "ap-southeast")
BOOT = "b" * 32
T0 = 1_790_000_000.0


def engine(rule: Rule | None = None, regions: tuple[str, ...] = REGIONS, **kw: float) -> Engine:
    config = AggregatorConfig(regions=list(regions), rule=rule or Rule())
    return Engine(
        config.regions,
        config.rule_for,
        default_interval=kw.get("default_interval", 10.0),
        forget_after=kw.get("forget_after", 3600.0),
    )


def online(
    region: str,
    targets: Iterable[str] = ("api",),
    at: float = T0,
    *,
    probe_id: str | None = None,
    interval: float = 10.0,
    boot_id: str = BOOT,
) -> Presence:
    """A probe's `online` presence listing `targets` (probe id `{region}-1` unless given)."""
    return Presence(
        status="online",
        probe_id=probe_id or f"{region}-1",
        region=region,
        boot_id=boot_id,
        at=at,
        targets=dict.fromkeys(targets, interval),
    )


@dataclass
class RegionProbe:
    """A fake probe for one region that produces results with correct streaks and seq.

    `successes=1` makes a probe that was up before the test: its first success completes K.
    """

    region: str
    target: str = "api"
    boot_id: str = BOOT
    probe_id: str = ""
    interval: float = 10.0
    seq: int = 0
    failures: int = 0
    successes: int = 0
    history: list[ProbeResult] = field(default_factory=list)

    def check(self, ok: bool, at: float, version: str | None = "3.8.34") -> ProbeResult:
        self.seq += 1
        if ok:
            self.failures, self.successes = 0, self.successes + 1
        else:
            self.failures, self.successes = self.failures + 1, 0
        result = ProbeResult(
            probe_id=self.probe_id or f"{self.region}-1",
            region=self.region,
            target=self.target,
            boot_id=self.boot_id,
            seq=self.seq,
            scheduled_at=at,
            started_at=at,
            duration_ms=12.0,
            ok=ok,
            status_code=200 if ok else 503,
            error_kind=None if ok else ErrorKind.HTTP_STATUS,
            error=None if ok else "HTTP 503, expected 200: db down",
            version=version,
            consecutive_failures=self.failures,
            consecutive_successes=self.successes,
        )
        self.history.append(result)
        return result


def verdict(e: Engine, target: str = "api") -> Verdict:
    """The target's current verdict (a call, so type narrowing does not stick across steps)."""
    return state(e, target).verdict


def state(e: Engine, target: str = "api") -> TargetState:
    """The engine's own state of a target, for tests of the engine (readers use `snapshot`)."""
    return e._targets[target]


def names(transitions: Iterable[Transition]) -> list[str]:
    """Short `kind:old->new` labels."""
    return [f"{t.kind}:{t.old}->{t.new}" for t in transitions]


class Clock:
    """A settable clock for the code under test, starting at T0."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
