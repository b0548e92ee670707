"""Config pieces both services spell the same way: durations, `mqtt:`, `listen:`, loading.

`load_config`-style functions in each service read the config file and call `parse_yaml`
here: text and environment in, a validated frozen model or a `ConfigError` out. Validation
also reads every file the config names (secret files, CA bundles, client certificates), so
`--check-config` and start catch a missing or bad one, and a running service never reads
them again.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from runtime.errors import ConfigError
from runtime.secrets import SecretFile, read_secret_file, resolve_secret
from runtime.tls import checked_context

__all__ = ["ConfigError"]  # re-exported: config errors are raised from here

log = logging.getLogger("vigil.config")

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_url(value: str, schemes: tuple[str, ...], hint: str) -> str:
    """Validate an absolute URL with one of `schemes` and a sane port.

    Raises:
        ValueError: with `hint` saying what a good URL looks like.
    """
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(hint)
    try:
        parts.port  # noqa: B018 - property access validates the port
    except ValueError as exc:
        raise ValueError(f"bad port in url: {exc}") from None
    return value


def parse_duration(value: object) -> float:
    """Turn `10`, `2.5`, `"500ms"`, `"10s"`, `"1m30s"`, `"1h"` or `"30d"` into seconds.

    Raises:
        ValueError: the value is not a positive, finite duration.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '500ms' or '10s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"invalid duration {value!r}: use seconds or units ms, s, m, h, d (e.g. '10s')"
                ) from None
    else:
        raise ValueError("a duration is a number of seconds or a string like '500ms' or '10s'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive and finite, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class StrictModel(BaseModel):
    """Base for config models: frozen, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_listen(value: str) -> tuple[str, int]:
    """Split `"host:port"` (or `"[::1]:port"`) into its parts.

    Raises:
        ValueError: no port, or a port out of range.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen must be 'host:port', got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host.strip("[]") or "0.0.0.0", port  # noqa: S104 - an empty host means all


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


Listen = Annotated[str, BeforeValidator(lambda v: _check_listen(str(v)))]


class MqttSettings(StrictModel):
    """How to reach the broker; the same block in the probe's and the aggregator's config."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    # Secrets come from the environment (VIGIL_MQTT_PASSWORD) or a file, never from YAML text
    # checked into a repository; SecretStr keeps them out of reprs and error messages.
    password: SecretStr | None = None
    password_file: SecretFile | None = None
    client_id: str | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    reconnect_max: Duration = 30.0
    # The largest MQTT packet this client accepts, told to the broker on MQTT 5 (which then
    # drops bigger ones for this client instead of sending them); on 3.1.1 only the broker's
    # own max_packet_size (set in deploy/) protects. Room for the largest presence record.
    max_packet_size: Annotated[int, Field(ge=4096, le=268_435_455)] = 1_048_576
    _ssl: ssl.SSLContext | None = PrivateAttr(default=None)
    _password: str | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        return check_url(
            value, ("mqtt", "mqtts"), "url must look like mqtt://host:1883 or mqtts://host:8883"
        )

    @model_validator(mode="after")
    def _load_tls(self) -> Self:
        # Loaded now, so a bad file is a config error at start, not a crash at reconnect.
        if self.tls:
            self._ssl = checked_context(
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
                insecure=self.tls_insecure,
            )
            return self
        # Refused rather than checked: on a plain url the file would never be used, and
        # whoever named it expects TLS, so the service must not quietly run in plain text.
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(self, key) is not None:
                raise ValueError(
                    f"{key} is set but url is plain mqtt://: use mqtts:// for TLS, or remove {key}"
                )
        return self

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Broker port, defaulting per scheme."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        """Whether the url asks for TLS."""
        return urlsplit(self.url).scheme == "mqtts"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an `mqtts://` broker, None for plain `mqtt://`.

        Files changed on disk since (a renewed certificate) are loaded again; if they cannot
        be loaded now, the last good context is used and the failure logged.
        """
        if not self.tls:
            return None
        try:
            self._ssl = checked_context(
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
                insecure=self.tls_insecure,
            )
        except ValueError as exc:
            log.warning("tls_reload_failed", extra={"error": str(exc)})
        return self._ssl

    def resolved_password(self) -> str | None:
        """The password, inline or from `password_file`, read again at every connect.

        The file was checked when the config was loaded; read again here so a rotated
        password is picked up at the next reconnect, and if it cannot be read now (a secret
        being replaced), the last one read is used and the failure logged, never raised.
        """
        if self.password is not None or self.password_file is None:
            return resolve_secret(self.password, self.password_file)
        try:
            self._password = read_secret_file(self.password_file.path, "mqtt.password_file")
        except ConfigError as exc:
            log.warning("secret_reread_failed", extra={"error": str(exc)})
        return self._password or self.password_file.value.get_secret_value()


def expand_env(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace `${VAR}` in every string of a parsed YAML tree with the variable's value.

    Expansion happens after YAML parsing so a value can never change the document's shape.

    Raises:
        ConfigError: a referenced variable is not set; the message names the key.
    """
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{where or '(top)'}: environment variable {name} is not set")
            return env[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, `key.path: message`, without echoing input values (secrets)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        loc = loc.lstrip(".") or "(top)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


M = TypeVar("M", bound=BaseModel)


def parse_yaml(
    text: str,
    model: type[M],
    *,
    source: str,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> M:
    """Validate YAML text against `model`; `overrides` replace top-level keys first.

    Raises:
        ConfigError: with `source` and the offending key in the message.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        data = expand_env(data, env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def read_config_text(path: Path) -> str:
    """Read a config file.

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not UTF-8 text") from None


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Bootstrap and secret settings both services take from the environment."""
    mqtt: dict[str, Any] = {}
    if "VIGIL_MQTT_URL" in env:
        mqtt["url"] = env["VIGIL_MQTT_URL"]
    if "VIGIL_MQTT_USERNAME" in env:
        mqtt["username"] = env["VIGIL_MQTT_USERNAME"]
    if "VIGIL_MQTT_PASSWORD" in env:
        mqtt["password"] = env["VIGIL_MQTT_PASSWORD"]
    if "VIGIL_MQTT_PASSWORD_FILE" in env:
        mqtt["password_file"] = env["VIGIL_MQTT_PASSWORD_FILE"]
    return {"mqtt": mqtt} if mqtt else {}
