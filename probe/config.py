"""The probe agent's config: one YAML file, validated, with env overrides for secrets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from runtime.config import (
    Duration,
    Listen,
    MqttSettings,
    StrictModel,
    check_url,
    env_overrides,
    parse_yaml,
    read_config_text,
)
from runtime.secrets import resolve_secret
from wire.result import Name


class BodyAssertion(StrictModel):
    """The health body must be JSON whose `json_field` equals `equals`."""

    json_field: Annotated[str, Field(min_length=1)] = "status"
    equals: str | int | float | bool = "ok"


class TargetConfig(StrictModel):
    """One service to check."""

    name: Name
    url: str
    health_path: str = "/api/health/ping"
    expected_status: Annotated[int, Field(ge=100, le=599)] = 200
    # null: any body passes once the status matches.
    body: BodyAssertion | None = BodyAssertion()
    # null skips the version check.
    version_path: str | None = "/api/system/version"
    version_field: Annotated[str, Field(min_length=1)] = "current"
    version_auth_header: SecretStr | None = None
    version_auth_header_file: Path | None = None
    interval: Duration = 10.0
    timeout: Duration = 5.0
    # Fast confirm: after a failed check, check again this soon (up to `confirm_retries`
    # times, until one passes) instead of a whole interval later, so an outage reaches the
    # aggregator's N failures in about interval + (N - 1) x retry_interval. null: off.
    retry_interval: Duration | None = 2.0
    confirm_retries: Annotated[int, Field(ge=0, le=10)] = 2
    # The service's p99 budget for the ping endpoint; a result over it is marked `slow`.
    latency_budget: Duration = 0.05
    tls_verify: bool = True
    ca_file: Path | None = None
    headers: dict[str, str] = {}
    # Off by default: a fresh connection per check measures DNS, connect and TLS every time
    # and a dead listener cannot hide behind a pooled connection (blackbox_exporter does so).
    reuse_connections: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        hint = "url must be an absolute http:// or https:// URL"
        return check_url(value, ("http", "https"), hint).rstrip("/")

    @field_validator("health_path", "version_path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("path must start with '/'")
        return value

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> Self:
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be shorter than interval ({self.interval:g}s)"
            )
        if self.version_auth_header is not None and self.version_auth_header_file is not None:
            raise ValueError("set version_auth_header or version_auth_header_file, not both")
        return self

    @property
    def health_url(self) -> str:
        """Full URL of the health endpoint."""
        return self.url + self.health_path

    @property
    def version_url(self) -> str | None:
        """Full URL of the version endpoint, or None when the check is off."""
        return None if self.version_path is None else self.url + self.version_path

    def auth_header(self) -> str | None:
        """The version endpoint's Authorization value, reading its file if configured.

        Raises:
            ConfigError: the file cannot be read.
        """
        return resolve_secret(
            self.version_auth_header,
            self.version_auth_header_file,
            f"targets.{self.name}.version_auth_header_file",
        )


class ProbeConfig(StrictModel):
    """The whole probe agent config file."""

    region: Name
    probe_id: Name
    # Absent: no broker; only useful with --once, which prints results.
    mqtt: MqttSettings | None = None
    listen: Listen = "127.0.0.1:9101"
    targets: Annotated[list[TargetConfig], Field(min_length=1)]
    # Cap on checks in flight across the process (see docs/performance.md for why).
    max_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Results held while the broker is unreachable; the oldest is dropped beyond this.
    buffer_size: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    # How long SIGTERM may take to finish checks, flush and say offline.
    shutdown_timeout: Duration = 10.0

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[TargetConfig]) -> list[TargetConfig]:
        seen: set[str] = set()
        for target in targets:
            if target.name in seen:
                raise ValueError(f"duplicate target name {target.name!r}")
            seen.add(target.name)
        return targets


def parse_config(
    text: str, *, source: str, env: Mapping[str, str], region: str | None = None
) -> ProbeConfig:
    """Validate probe config text; env and `region` (the CLI flag) override the file.

    Environment: VIGIL_REGION, VIGIL_PROBE_ID, VIGIL_MQTT_URL, VIGIL_MQTT_USERNAME,
    VIGIL_MQTT_PASSWORD, VIGIL_MQTT_PASSWORD_FILE; `${VAR}` anywhere in a value.

    Raises:
        ConfigError: naming `source` and the key at fault.
    """
    overrides: dict[str, Any] = env_overrides(env)
    if "VIGIL_REGION" in env:
        overrides["region"] = env["VIGIL_REGION"]
    if "VIGIL_PROBE_ID" in env:
        overrides["probe_id"] = env["VIGIL_PROBE_ID"]
    if region is not None:
        overrides["region"] = region
    return parse_yaml(text, ProbeConfig, source=source, env=env, overrides=overrides)


def load_config(path: Path, env: Mapping[str, str], region: str | None = None) -> ProbeConfig:
    """Read and validate the probe config file at `path`.

    Raises:
        ConfigError: naming the file and the key at fault.
    """
    return parse_config(read_config_text(path), source=str(path), env=env, region=region)
