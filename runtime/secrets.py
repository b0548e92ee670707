"""Reading secrets: the one place a password, token or header is taken from a file.

A config key that names a secret file is typed `SecretFile`: the file is read when the config
is validated (by `--check-config` and at start), so a missing or unreadable file is a config
error naming the key and the path, and a running service never reads it again and cannot
crash on it later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, SecretStr

from runtime.errors import ConfigError


def read_secret_file(path: Path, key: str) -> str:
    """The stripped text of a secret file.

    Args:
        path: the file.
        key: the config key that named it, for the error message.

    Raises:
        ConfigError: the file cannot be read; names `key`, never the content.
    """
    try:
        return _read(path)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


@dataclass(frozen=True)
class LoadedSecret:
    """A secret file's path and its stripped text, read once at validation."""

    path: Path
    value: SecretStr

    def __str__(self) -> str:
        return str(self.path)


def _load(value: object) -> LoadedSecret:
    if isinstance(value, LoadedSecret):
        return value
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("a secret file is a path")
    path = Path(value)
    return LoadedSecret(path, SecretStr(_read(path)))


# A config field naming a secret file: read (and checked) during validation, dumped as its path.
SecretFile = Annotated[
    LoadedSecret, PlainValidator(_load), PlainSerializer(lambda s: str(s.path), return_type=str)
]


def resolve_secret(value: SecretStr | None, file: LoadedSecret | None) -> str | None:
    """A secret given inline (`value`) or in a file (read at validation); None when neither."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.value.get_secret_value()
    return None
