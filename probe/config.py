"""The probe agent's config: one YAML file, validated, with env overrides for secrets."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self, cast
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from probe.profiles import PROFILES, HealthEndpoint
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
from runtime.secrets import SecretFile, resolve_secret
from runtime.tls import checked_context
from wire.result import MAX_PATH_CHARS, MAX_PRESENCE_BYTES, Name


class BodyAssertion(StrictModel):
    """The health body must be JSON whose `json_field` equals `equals`."""

    json_field: Annotated[str, Field(min_length=1)] = "status"
    equals: str | int | float | bool = "ok"


# RFC 9110 token: a header name that aiohttp sends as written.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
HeaderName = Annotated[str, Field(pattern=_HEADER_NAME.pattern)]


class VersionLogin(StrictModel):
    """A login that yields the session cookie the version endpoint wants (OmniRoute 3.7.x).

    The probe POSTs `{"password": ...}` to `url`, keeps the `cookie` from Set-Cookie and
    sends it on version requests only; a 401 from the version endpoint logs in again once.
    """

    # Absolute, or a path on the target's url.
    url: str
    password_file: SecretFile
    cookie: Annotated[str, Field(pattern=_HEADER_NAME.pattern)] = "auth_token"

    @field_validator("url")
    @classmethod
    def _url_or_path(cls, value: str) -> str:
        if value.startswith("/"):
            return value
        return check_url(value, ("http", "https"), "url must be a path or an http(s) URL")

    def __repr__(self) -> str:
        return f"VersionLogin(url={self.url!r}, cookie={self.cookie!r})"


class TargetConfig(StrictModel):
    """One service to check."""

    name: Name
    url: str
    # A service profile (probe/profiles.py) fills the keys left unset and may list several
    # health endpoints, moved between only on a 404.
    profile: str = "generic"
    # Bounded: every result names the endpoint that answered.
    health_path: Annotated[str, Field(max_length=MAX_PATH_CHARS)] = "/api/health/ping"
    expected_status: Annotated[int, Field(ge=100, le=599)] = 200
    # null: any body passes once the status matches.
    body: BodyAssertion | None = BodyAssertion()
    # null skips the version check.
    version_path: str | None = "/api/system/version"
    version_field: Annotated[str, Field(min_length=1)] = "current"
    version_auth_header: SecretStr | None = None
    version_auth_header_file: SecretFile | None = None
    # Headers sent to the version endpoint only (never to health, never logged): values
    # inline (`${VAR}` expanded from env) or read from a file at load.
    version_headers: dict[HeaderName, SecretStr] = {}
    version_header_files: dict[HeaderName, SecretFile] = {}
    version_login: VersionLogin | None = None
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
    _ssl: ssl.SSLContext | bool = PrivateAttr(default=True)
    # Kept out of reprs: people put cookies and keys here too (version_headers is the place).
    headers: dict[str, str] = Field(default={}, repr=False)
    # Off by default: a fresh connection per check measures DNS, connect and TLS every time
    # and a dead listener cannot hide behind a pooled connection (blackbox_exporter does so).
    reuse_connections: bool = False
    # Bytes of body the probe reads, after decompression; a larger body fails the check as
    # `body_too_large` and reading stops there, so a decompression bomb costs nothing.
    max_body: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    _endpoints: tuple[HealthEndpoint, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        # The profile's values fill only the keys the config leaves unset, so an explicit key
        # always wins; an unknown profile is left to `_known_profile` to name.
        if isinstance(data, dict):
            profile = PROFILES.get(str(data.get("profile", "generic")))
            if profile is not None and profile.defaults:
                data = {**profile.defaults, **data}
        return data

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r}; known: {', '.join(sorted(PROFILES))}")
        return value

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

    @model_validator(mode="after")
    def _check_version_headers(self) -> Self:
        seen: set[str] = set()
        values = [(k, v.get_secret_value()) for k, v in self.version_headers.items()]
        values += [(k, f.value.get_secret_value()) for k, f in self.version_header_files.items()]
        for name, value in values:
            if name.lower() in seen:
                raise ValueError(f"version_headers: {name} is given twice")
            seen.add(name.lower())
            if "\r" in value or "\n" in value:
                raise ValueError(f"version_headers: the value of {name} has a line break")
        if "authorization" in seen and self.auth_header() is not None:
            raise ValueError(
                "set Authorization in version_headers or version_auth_header, not both"
            )
        if "cookie" in seen and self.version_login is not None:
            raise ValueError("set Cookie in version_headers or version_login, not both")
        login = self.login_url
        if login is not None:
            where, home = urlsplit(login), urlsplit(self.url)
            same_origin = (where.scheme, where.netloc) == (home.scheme, home.netloc)
            if where.scheme != "https" and not same_origin:
                # The password would cross the network in clear to another host.
                raise ValueError("version_login.url: use https, or a path on the target's own url")
        return self

    @model_validator(mode="after")
    def _resolve_endpoints(self) -> Self:
        body = self.body
        own = HealthEndpoint(
            self.health_path,
            body.json_field if body else None,
            body.equals if body else "ok",
        )
        known = {e.path: e for e in PROFILES[self.profile].endpoints}
        if "body" in self.model_fields_set or self.health_path not in known:
            # An explicit body or path of its own pins the target to that one endpoint.
            self._endpoints = (own,)
        elif self.health_path == PROFILES[self.profile].endpoints[0].path:
            self._endpoints = PROFILES[self.profile].endpoints
        else:
            # The path of a later generation's endpoint: pinned there, with its own checks.
            self._endpoints = (known[self.health_path],)
        return self

    @model_validator(mode="after")
    def _load_tls(self) -> Self:
        # Built now (shared by targets naming the same files), so a bad ca_file is a config
        # error at start rather than a check that crashes every time.
        if self.url.startswith("https:"):
            if not self.tls_verify:
                self._ssl = False
            else:
                self._ssl = checked_context(ca_file=self.ca_file)
        return self

    # The two properties below read pydantic's private-attribute slot directly: `self._ssl`
    # goes through BaseModel.__getattr__ (2.5 us against 0.07 us), and every check asks.
    @property
    def ssl(self) -> ssl.SSLContext | bool:
        """The `ssl=` argument for this target's requests (True: aiohttp's default)."""
        return cast("ssl.SSLContext | bool", self._private()["_ssl"])

    @property
    def health_url(self) -> str:
        """Full URL of the health endpoint."""
        return self.url + self.health_path

    @property
    def version_url(self) -> str | None:
        """Full URL of the version endpoint, or None when the check is off."""
        return None if self.version_path is None else self.url + self.version_path

    def auth_header(self) -> str | None:
        """The version endpoint's Authorization value (a file is read at validation)."""
        return resolve_secret(self.version_auth_header, self.version_auth_header_file)

    @property
    def health_endpoints(self) -> tuple[HealthEndpoint, ...]:
        """The health endpoints in order of preference; more than one only from a profile."""
        return cast("tuple[HealthEndpoint, ...]", self._private()["_endpoints"])

    def _private(self) -> dict[str, Any]:
        private = self.__pydantic_private__
        assert private is not None, "set by pydantic for a model with private attributes"
        return private

    def version_header_values(self) -> dict[str, str]:
        """Every header for the version endpoint only: version_headers, files, Authorization."""
        headers = {k: v.get_secret_value() for k, v in self.version_headers.items()}
        headers.update(
            {k: f.value.get_secret_value() for k, f in self.version_header_files.items()}
        )
        auth = self.auth_header()
        if auth:
            headers["Authorization"] = auth
        return headers

    @property
    def has_version_credentials(self) -> bool:
        """True when the config gives the version endpoint any credentials."""
        return bool(
            self.version_headers
            or self.version_header_files
            or self.version_login
            or self.auth_header()
        )

    @property
    def login_url(self) -> str | None:
        """Full URL of the version login, or None without one."""
        if self.version_login is None:
            return None
        url = self.version_login.url
        return self.url + url if url.startswith("/") else url


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
    # Results the broker acknowledged this recently are sent again after a reconnect: a
    # broker crash loses what it took since its last save to disk (autosave_interval, 30s in
    # deploy/). Duplicates are dropped by the aggregator. null: off.
    replay_window: Duration | None = 60.0
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

    @model_validator(mode="after")
    def _presence_fits(self) -> Self:
        # The presence record lists every target with its interval; the aggregator (and the
        # brokers' maximum packet size) refuse one over MAX_PRESENCE_BYTES, which would leave
        # this probe's region unjudgeable. Counted generously: name, interval, punctuation.
        size = 512 + sum(len(t.name) + len(repr(t.interval)) + 6 for t in self.targets)
        if size > MAX_PRESENCE_BYTES:
            raise ValueError(
                f"targets: {len(self.targets)} targets make a presence record of about "
                f"{size} bytes, over the {MAX_PRESENCE_BYTES} a reader accepts; "
                "split them across probes"
            )
        return self


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
