"""The container image from an empty store: how long each step takes and what it weighs.

Runs the same steps as `make test-images` (tests/containers/engine.py) against a new, empty
podman store (or Docker, when a daemon answers): the base (pulled, or debootstrapped when no
registry answers), the project image cold, a rebuild after a source change (layers cached),
the third-party stand-ins, then sizes: the image, its base, the venv inside it. Figures go to
docs/performance.md.

Usage: python benchmarks/image_bench.py [--home DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import machine, now, write_section  # noqa: E402 - benchmarks/ is on sys.path

from tests.containers.engine import (  # noqa: E402 - after the path fix above
    Engine,
    base_image,
    build_vigil,
    detect,
    ensure_standins,
)

TAG = "localhost/vigil:bench"
T = TypeVar("T")


def timed(step: str, times: dict[str, float], fn: Callable[..., T], *args: object) -> T:
    started = time.monotonic()
    result = fn(*args)
    times[step] = time.monotonic() - started
    print(f"{step}: {times[step]:.1f} s", flush=True)
    return result


def mb(engine: Engine, image: str) -> float:
    return float(engine.image(image).get("Size", 0)) / 1e6


def venv_mb(engine: Engine, image: str) -> float:
    done = engine.run("run", "--rm", "--entrypoint", "du", image, "-sk", "/opt/vigil")
    return int(done.stdout.split()[0]) / 1000


def run(home: Path) -> str:
    engine = detect(home)
    times: dict[str, float] = {}
    base = timed("base", times, base_image, engine)
    timed("image, cold", times, build_vigil, engine, base, TAG)
    # A source change: only the layers from `COPY wire` on are rebuilt.
    marker = ROOT / "wire" / "_bench_marker.py"
    marker.write_text("# image_bench: a changed source file\n")
    try:
        timed("image, one source file changed", times, build_vigil, engine, base, TAG)
    finally:
        marker.unlink()
    made = timed("third-party images (compose)", times, ensure_standins, engine)
    sizes = {
        "image": mb(engine, TAG),
        "base": mb(engine, base),
        "venv": venv_mb(engine, TAG),
    }
    where = "Docker" if not engine.podman else "podman (private store, runc, overlay)"
    rows = "\n".join(f"| {step} | {seconds:.0f} s |" for step, seconds in times.items())
    return f"""
## Container image

- Date: {now()}
- Machine: {machine()}
- Command: `python benchmarks/image_bench.py` (an empty store: nothing cached)
- Engine: {where}; base `{base}`; third-party images: {made}

| step, from an empty store | time |
|---|---|
{rows}

| what | size |
|---|---|
| the image (`{TAG}`) | **{sizes["image"]:.0f} MB** |
| its base | {sizes["base"]:.0f} MB |
| the venv `/opt/vigil` inside it | {sizes["venv"]:.0f} MB |

The image is the base plus the venv (pip and setuptools removed; no compiler, wheels or
caches). Where the base is `localhost/vigil-base`, no registry answered and it was
debootstrapped from Debian 12 (Python 3.11, venv, CA bundle; package lists, docs, manuals
and locales left out). The official `python:3.11-slim` could not be pulled on this machine,
so the image's size on it is not measured here; the venv above is what it would add to it.
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=None, help="the engine's store (default: new)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="vigil-image-bench-", dir="/var/tmp"))
    try:
        markdown = run(home)
    finally:
        if args.home is None:
            engine = detect(home)
            if engine.podman:
                engine.run("system", "reset", "--force", check=False, timeout=300)
            shutil.rmtree(home, ignore_errors=True)
    write_section(args.output, "image", markdown)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
