"""Structured logs for both services: one event name plus keys.

JSON lines when stdout is not a terminal (containers, log shippers), `key=value` text when it
is. Callers pass keys with `extra={...}`; secrets are never passed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import IO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the record's extra keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS level event key=value ...` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as one readable line."""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        keys = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()} {keys}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send all logs to `stream` (stderr by default) in the format that suits it."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter() if out.isatty() else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho logs every packet at DEBUG and reconnect noise at WARNING; Vigil logs its own events.
    logging.getLogger("mqtt").setLevel(logging.ERROR)


class Throttle:
    """Says whether a keyed event may be logged again: at most once per `every` seconds.

    For anything an outsider can repeat (a refused target, a rejected message, a failing
    target): the first occurrence is logged, the rest are counted in metrics only. Keys come
    from bounded sets (reasons, regions, capped target names).
    """

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        """True (and the key's window restarts) when `key` was not logged in the last window."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            return False
        self._last[key] = now
        return True
