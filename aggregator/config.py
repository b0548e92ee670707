"""The aggregator's config: regions, the rule and its per-target overrides, the broker."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from runtime.config import (
    ConfigError,
    Duration,
    Listen,
    MqttSettings,
    StrictModel,
    check_url,
    env_overrides,
    parse_yaml,
    read_config_text,
)
from runtime.secrets import SecretFile
from runtime.tls import checked_context
from wire.result import Name
from wire.topics import TopicError, instance_level

Count = Annotated[int, Field(ge=1, le=1000)]


class RuleOverride(StrictModel):
    """Per-target changes to the rule; unset fields keep the global value."""

    failures: Count | None = None
    regions: Count | None = None
    recoveries: Count | None = None
    min_regions: Count | None = None
    stale_after: Duration | None = None
    version_skew_after: Duration | None = None


class Rule(StrictModel):
    """N consecutive failures in each of M regions, with hysteresis and staleness."""

    # A region is failing once its probe reports this many consecutive failures ...
    failures: Count = 3
    # ... and the target is down once this many regions are failing.
    regions: Count = 3
    # A failing region recovers after this many consecutive successes (hysteresis).
    recoveries: Count = 2
    # Fewest fresh regions that may judge a target: `up`, or `down` on a degraded quorum.
    min_regions: Count = 2
    # A region's view is stale after this long without a result; unset means 3 x the probe's
    # check interval for that target.
    stale_after: Duration | None = None
    # Fresh regions may disagree on the version this long (a deploy) before it is skew.
    version_skew_after: Duration = 600.0

    def merged(self, override: RuleOverride | None) -> Rule:
        """This rule with a target's overrides applied."""
        if override is None:
            return self
        changes = override.model_dump(exclude_none=True)
        return self.model_copy(update=changes) if changes else self


LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# Labels Vigil sets itself; static labels may not override them.
RESERVED_LABELS = frozenset({"alertname", "severity", "sev", "target", "region"})


class BasicAuth(StrictModel):
    """Basic auth for Alertmanager; the password from env or a file."""

    username: str
    password: SecretStr | None = None
    password_file: SecretFile | None = None


class AlertmanagerConfig(StrictModel):
    """Where alerts go: every peer of an Alertmanager cluster, never a load balancer."""

    urls: list[str] = []
    resend_interval: Duration = 60.0
    # How long a resolved alert keeps being re-sent (Prometheus: 15 minutes).
    resolved_retention: Duration = 900.0
    # ServiceRegionDown waits this long (like Prometheus's `for:`): on the way into a full
    # outage, and out of one, regions cross the threshold seconds apart, which is not a
    # regional problem. Long enough for the other regions to confirm at the defaults.
    region_down_for: Duration = 30.0
    labels: dict[Annotated[str, Field(pattern=LABEL_NAME)], str] = {}
    runbook_url: str | None = None
    # Base URL of this aggregator as people reach it, for each alert's generatorURL;
    # unset means http://<listen>.
    external_url: str | None = None
    timeout: Duration = 10.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 64
    # Alerts waiting per peer; beyond this the oldest update is dropped and counted.
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: SecretFile | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    _ssl: ssl.SSLContext | bool = PrivateAttr(default=True)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        hint = "each url must look like http://alertmanager:9093"
        checked = [check_url(u, ("http", "https"), hint).rstrip("/") for u in urls]
        if len(set(checked)) != len(checked):
            raise ValueError("urls must not repeat")
        return checked

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        clash = RESERVED_LABELS & labels.keys()
        if clash:
            raise ValueError(f"labels may not set {', '.join(sorted(clash))}: Vigil sets those")
        return labels

    @model_validator(mode="after")
    def _one_token(self) -> Self:
        if self.bearer_token is not None and self.bearer_token_file is not None:
            raise ValueError("set bearer_token or bearer_token_file, not both")
        if self.basic_auth is not None and (self.bearer_token or self.bearer_token_file):
            raise ValueError("set basic_auth or a bearer token, not both")
        return self

    @model_validator(mode="after")
    def _load_tls(self) -> Self:
        # Loaded now: a bad file is a config error at start, not a failed send at 3 a.m.
        if self.tls_insecure:
            self._ssl = False
        elif self.ca_file is not None or self.cert_file is not None or self.key_file:
            self._ssl = checked_context(
                ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file
            )
        return self

    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """The `ssl=` argument for requests to Alertmanager (True: the system's CAs)."""
        return self._ssl


class ApiConfig(StrictModel):
    """Who may read the operator API and the status page."""

    # Bearer tokens; set them with VIGIL_API_TOKENS (comma-separated) or tokens_file
    # (one per line), not in this file. None configured: the API is open.
    tokens: list[SecretStr] = []
    tokens_file: SecretFile | None = None
    # Also require a token for /healthz, /readyz and /metrics.
    protect_probes: bool = False
    # Serve /badge/* without a token (for a README); only verdicts and uptime, no internals.
    public_badges: bool = False
    # Serve /public: a read-only page (verdicts, uptime, incidents, banner) without a token
    # and without internals (no error texts, no versions), for customers.
    public_page: bool = False

    def all_tokens(self) -> frozenset[str]:
        """Every accepted token, from `tokens` and `tokens_file` (read with the config)."""
        tokens = {t.get_secret_value() for t in self.tokens if t.get_secret_value()}
        if self.tokens_file is not None:
            text = self.tokens_file.value.get_secret_value()
            tokens |= {line.strip() for line in text.splitlines() if line.strip()}
        return frozenset(tokens)


class HttpConfig(StrictModel):
    """Bounds on the HTTP listener, so slow or many clients cannot starve `/healthz`."""

    # A new connection must send a complete request head within this long.
    header_timeout: Duration = 10.0
    # An idle keep-alive connection is closed after this long.
    keepalive_timeout: Duration = 15.0
    # Connections open at once, kept under the usual 1024 file descriptor limit. At the cap
    # a new connection closes the oldest one still waiting for its request head, or is
    # refused when none is; each is counted in vigil_http_connections_shed_total.
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 512


class Limits(StrictModel):
    """Caps on what publishers can make the aggregator hold; each is counted when hit.

    Sized for a fleet with room to spare: a probe that reports made-up target names (a bug,
    a bad config, stolen credentials) fills its region's share and stops there.
    """

    # Targets in all, and targets any one region may report.
    max_targets: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    max_targets_per_region: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # Samples on /metrics from per-target series; targets past it (newest first) are left
    # out and counted in vigil_metrics_targets_omitted.
    max_series: Annotated[int, Field(ge=100, le=100_000_000)] = 1_000_000
    # Distinct probe ids per region with a clock-skew series.
    max_probes_per_region: Annotated[int, Field(ge=1, le=10_000)] = 64


def _switch(value: object) -> object:
    # YAML 1.1 reads a bare on/off as a boolean.
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


LatencyHistograms = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)]


class MetricsConfig(StrictModel):
    """What `/metrics` carries per (target, region) beyond the fixed series."""

    # The latency histogram, 14 samples per (target, region): `auto` exports it while the
    # aggregator holds at most `histogram_max_pairs` pairs (1,000 targets x 3 regions), and
    # leaves it out beyond, where it would be most of the scrape.
    latency_histograms: LatencyHistograms = "auto"
    histogram_max_pairs: Annotated[int, Field(ge=0, le=100_000_000)] = 3_000


class RetentionConfig(StrictModel):
    """How long each rollup tier is kept."""

    minute: Duration = 48 * 3600.0
    hour: Duration = 90 * 86400.0
    day: Duration = 2 * 365 * 86400.0
    # Incidents, deploy markers, maintenance windows and banners.
    events: Duration = 2 * 365 * 86400.0


class StorageConfig(StrictModel):
    """The history database (SQLite). No path: no history (uptime, incidents, badges off)."""

    path: Path | None = None
    retention: RetentionConfig = RetentionConfig()
    # Writes queued beyond this many rows are dropped and counted, never awaited.
    max_pending: Annotated[int, Field(ge=1000, le=10_000_000)] = 500_000


class SloConfig(StrictModel):
    """The availability objective uptime, error budget and burn rates are measured against."""

    target: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    window: Duration = 30 * 86400.0
    # Down time inside a maintenance window counts against the objective only when set.
    count_maintenance: bool = False
    # The latency budget lines of the charts, in ms.
    latency_budgets_ms: Annotated[
        list[Annotated[float, Field(gt=0, le=600_000)]], Field(max_length=8)
    ] = [5.0, 20.0, 50.0]

    @field_validator("window")
    @classmethod
    def _whole_days(cls, window: float) -> float:
        # Measured on the daily rollups: any other length would be rounded, silently.
        if window < 86400 or window % 86400:
            raise ValueError(f"must be a whole number of days (e.g. '30d'), got {window:g} s")
        return window


class AggregatorConfig(StrictModel):
    """The whole aggregator config file."""

    mqtt: MqttSettings = MqttSettings()
    listen: Listen = "127.0.0.1:8080"
    regions: Annotated[list[Name], Field(min_length=1)]
    rule: Rule = Rule()
    targets: dict[Name, RuleOverride] = {}
    # No urls: alerts go to the log, so a local run shows them.
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    api: ApiConfig = ApiConfig()
    http: HttpConfig = HttpConfig()
    # Fixed, so the broker keeps this aggregator's session (and queues results) while it is down.
    # Also names this instance's state subtree (vigil/v1/state/{client_id}/...), so it must be
    # a topic level; each aggregator of an HA pair has its own (VIGIL_CLIENT_ID sets it).
    client_id: str = "vigil-aggregator"
    # How long the broker keeps the session of an aggregator that does not come back.
    session_expiry: Duration = 86400.0
    # How long to wait for a SUBACK. After a reconnect with a large backlog queued for the
    # session, the broker sends the backlog first and the SUBACK behind it; the backlog is
    # consumed meanwhile, and a subscribe that times out is simply sent again.
    subscribe_timeout: Duration = 60.0
    # Before this long after connecting, verdicts are rebuilt from retained state but not acted
    # on, so a restart neither fires nor resolves anything on partial knowledge.
    startup_grace: Duration = 10.0
    # A result stamped further than this in the future is rejected (a broken clock).
    max_clock_skew: Duration = 30.0
    # A result that started longer ago than this is rejected (counted as past_timestamp): a
    # probe clock far behind, or news from a backlog older than anyone needs.
    max_result_age: Duration = 86400.0
    # The probes' check interval when their presence has not said it yet.
    default_interval: Duration = 10.0
    # A target nobody has reported for this long is dropped, with its metric series.
    forget_after: Duration = 3600.0
    # How long SIGTERM may take to exit. There is nothing to flush (state is retained at the
    # broker), so this only bounds the broker's goodbye and the requests in flight.
    shutdown_timeout: Duration = 5.0
    # Recent results kept per (target, region) for the API's history and the sparklines.
    history: Annotated[int, Field(ge=0, le=500)] = 20
    limits: Limits = Limits()
    metrics: MetricsConfig = MetricsConfig()
    storage: StorageConfig = StorageConfig()
    slo: SloConfig = SloConfig()

    @field_validator("regions")
    @classmethod
    def _unique(cls, regions: list[str]) -> list[str]:
        if len(set(regions)) != len(regions):
            raise ValueError("regions must not repeat")
        return regions

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, client_id: str) -> str:
        try:
            return instance_level(client_id)
        except TopicError as exc:
            raise ValueError(f"{exc}: it names this aggregator's state topics") from None

    @model_validator(mode="after")
    def _quorum_possible(self) -> Self:
        for name, rule in [("rule", self.rule)] + [
            (f"targets.{t}", self.rule.merged(o)) for t, o in self.targets.items()
        ]:
            if rule.regions > len(self.regions):
                raise ValueError(
                    f"{name}: regions ({rule.regions}) exceeds the {len(self.regions)} "
                    "configured regions, so nothing could ever be down"
                )
            if rule.min_regions > len(self.regions):
                raise ValueError(
                    f"{name}: min_regions ({rule.min_regions}) exceeds the "
                    f"{len(self.regions)} configured regions"
                )
        return self

    def rule_for(self, target: str) -> Rule:
        """The rule that applies to `target`."""
        return self.rule.merged(self.targets.get(target))


def parse_config(text: str, *, source: str, env: Mapping[str, str]) -> AggregatorConfig:
    """Validate aggregator config text; secrets and the broker come from the environment too.

    VIGIL_MQTT_*, VIGIL_CLIENT_ID, VIGIL_ALERTMANAGER_TOKEN and VIGIL_API_TOKENS override the
    file (VIGIL_CLIENT_ID: one config file for both aggregators of an HA pair).

    Raises:
        ConfigError: naming `source` and the key at fault.
    """
    overrides = env_overrides(env)
    if "VIGIL_CLIENT_ID" in env:
        overrides["client_id"] = env["VIGIL_CLIENT_ID"]
    alertmanager: dict[str, object] = {}
    if "VIGIL_ALERTMANAGER_TOKEN" in env:
        alertmanager["bearer_token"] = env["VIGIL_ALERTMANAGER_TOKEN"]
    if alertmanager:
        overrides["alertmanager"] = alertmanager
    if env.get("VIGIL_API_TOKENS"):
        tokens = [t.strip() for t in env["VIGIL_API_TOKENS"].split(",") if t.strip()]
        overrides["api"] = {"tokens": tokens}
    return parse_yaml(text, AggregatorConfig, source=source, env=env, overrides=overrides)


def load_config(path: Path, env: Mapping[str, str]) -> AggregatorConfig:
    """Read and validate the aggregator config file at `path`.

    Raises:
        ConfigError: naming the file and the key at fault.
    """
    return parse_config(read_config_text(path), source=str(path), env=env)


__all__ = [
    "AggregatorConfig",
    "AlertmanagerConfig",
    "ConfigError",
    "Rule",
    "RuleOverride",
    "load_config",
    "parse_config",
]
