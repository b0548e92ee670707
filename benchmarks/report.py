"""Writing one benchmark's section of docs/performance.md, leaving the others as they are."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path

HEADER = """# Performance

Every figure here was measured by a script in `benchmarks/` (`make bench` runs them all) and
written by it, with the machine, date and command of its run. Rerun a command to refresh
its section.
"""


def machine() -> str:
    """CPU, cores, kernel and the library versions that matter for these figures."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("aiohttp", "aiomqtt", "paho-mqtt", "pydantic", "uvloop")
    )
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {versions}"
    )


def now() -> str:
    """The run's date, in UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_section(path: Path, key: str, markdown: str) -> None:
    """Put `markdown` between this key's markers in `path`, replacing an earlier run's."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- section:{key} -->\n{markdown.strip()}\n<!-- /section:{key} -->"
    pattern = re.compile(
        rf"<!-- section:{re.escape(key)} -->.*?<!-- /section:{re.escape(key)} -->", re.S
    )
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures.json"


def write_figures(key: str, figures: dict[str, float], path: Path = FIGURES) -> None:
    """Keep one benchmark's headline numbers where another (shard_sim.py) can read them."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = {"date": now(), **figures}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_figures(key: str, path: Path = FIGURES) -> dict[str, float]:
    """A benchmark's headline numbers as last written; empty when it never ran."""
    data = json.loads(path.read_text()) if path.exists() else {}
    return dict(data.get(key, {}))
