"""The demo target's --authorization-file: the compose file secret it shares with the probes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_target(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo.target", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [("sk-only-the-key\n", "not 'Bearer <key>'"), ("Bearer   \n", "not 'Bearer <key>'")],
)
def test_a_file_that_is_not_a_bearer_value_is_exit_2(
    tmp_path: Path, content: str, problem: str
) -> None:
    secret = tmp_path / "authorization"
    secret.write_text(content)
    done = run_target("--authorization-file", str(secret))
    assert done.returncode == 2
    assert f"--authorization-file: {secret}: {problem}" in done.stderr


def test_a_missing_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    done = run_target("--authorization-file", str(tmp_path / "absent"))
    assert done.returncode == 2
    assert "absent: No such file or directory" in done.stderr


def test_a_key_and_a_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "authorization"
    secret.write_text("Bearer k\n")
    done = run_target("--api-key", "k", "--authorization-file", str(secret))
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr
