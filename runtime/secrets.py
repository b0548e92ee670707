"""Reading secrets: the one place a password, token or header is taken from a file."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

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
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None


def resolve_secret(value: SecretStr | None, path: Path | None, key: str) -> str | None:
    """A secret given inline (`value`) or in a file (`path`, read now); None when neither.

    Raises:
        ConfigError: the file cannot be read.
    """
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return read_secret_file(path, key)
    return None
