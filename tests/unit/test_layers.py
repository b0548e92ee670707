"""The layout's rules, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def top(name: str) -> str:
    return name.split(".")[0]


STDLIB = frozenset(sys.stdlib_module_names)
# Standard-library modules that would mean I/O or an event loop inside a pure layer.
IO_STDLIB = frozenset({"asyncio", "selectors", "socket", "ssl", "subprocess"})
IO_SUBMODULES = frozenset({"urllib.request", "http.client", "http.server"})


def does_io(name: str) -> bool:
    return top(name) in IO_STDLIB or name in IO_SUBMODULES


def parse(source: str) -> ast.Module:
    """`ast.parse`, retried once if CPython 3.11's AST constructor trips.

    "AST constructor recursion depth mismatch" (a data race on a global counter, cpython
    gh-106905) happened once in CI: the source is fine, so the parse is tried again.
    """
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)


def imports_of(package: str) -> dict[str, set[str]]:
    """Every module file under `package` with the top-two-level names it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = parse(path.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = {".".join(n.split(".")[:2]) for n in names}
    return out


def offenders(package: str, allowed: object) -> list[str]:
    assert callable(allowed)
    return [
        f"{module} imports {name}"
        for module, names in imports_of(package).items()
        for name in sorted(names)
        if not allowed(name)
    ]


LAYERS = {
    # The contract: the standard library and pydantic only, so any consumer can take it.
    "wire": lambda n: (
        n == "__future__" or (top(n) in STDLIB and not does_io(n)) or top(n) in {"pydantic", "wire"}
    ),
    # Shared plumbing knows nothing of either service or of the contract.
    "runtime": lambda n: top(n) not in {"wire", "probe", "aggregator", "cli", "demo"},
    # The pure core: no event loop, no network, no edges, no presentation.
    "aggregator/core": lambda n: (
        not does_io(n)
        and top(n) not in {"aiohttp", "aiomqtt", "paho", "tenacity", "probe"}
        and n
        not in {
            "aggregator.edges",
            "aggregator.present",
            "aggregator.app",
            "aggregator.recorder",
            "runtime.mqtt",
        }
    ),
    # Presentation reads the core; it neither speaks HTTP nor MQTT.
    "aggregator/present": lambda n: (
        not does_io(n)
        and top(n) not in {"aiohttp", "aiomqtt", "paho", "probe"}
        and n not in {"aggregator.edges", "aggregator.app"}
    ),
    # The two services share only wire/ and runtime/.
    "probe": lambda n: top(n) not in {"aggregator", "cli", "demo"},
    "aggregator": lambda n: top(n) not in {"probe", "cli", "demo"},
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layer_imports_only_what_it_may(package: str) -> None:
    """No module imports across a boundary the layout draws."""
    assert offenders(package, LAYERS[package]) == []


def test_the_rules_see_imports() -> None:
    """The checker finds real imports, so an empty offender list means something."""
    assert "aggregator.core" in imports_of("aggregator/core")["aggregator/core/pipeline.py"]
    assert offenders("aggregator/edges", LAYERS["aggregator/present"])  # edges speak HTTP


def test_importing_the_core_loads_no_io() -> None:
    """The core's imports, followed all the way down, load no database, socket or loop."""
    code = (
        "import sys, aggregator.core.pipeline, aggregator.core.alerts;"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = [
        m
        for m in out
        if m in {"sqlite3", "aiohttp", "aiomqtt", "paho", "asyncio"}
        or m.startswith(("aggregator.edges", "aggregator.present", "aggregator.recorder"))
    ]
    assert loaded == []
