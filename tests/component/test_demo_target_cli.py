"""The demo target's --authorization-file: the compose file secret it shares with the probes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from demo.target import make_app
from tests.conftest import Serve

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
    [(b"   \n", "empty"), (b"Bearer \xff\xfe\n", "not UTF-8 text")],
)
def test_a_file_with_no_usable_value_is_exit_2(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """Not a traceback (non-UTF-8), and not a target that accepts any request (empty)."""
    secret = tmp_path / "authorization"
    secret.write_bytes(content)
    done = run_target("--authorization-file", str(secret))
    assert done.returncode == 2
    assert f"--authorization-file: {secret}: {problem}" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_whole_value_is_compared_as_the_probes_send_it(serve: Serve) -> None:
    """Any scheme the service's operators put in the shared secret, not only `Bearer <key>`.

    The earlier target exited 2 unless the file held exactly `Bearer <key>`, and compose
    does not restart it: a secret the probes accept left the demo target dead.
    """
    url = await serve(make_app(authorization="Token abc def"))
    async with aiohttp.ClientSession() as session:
        for header, status in (("Token abc def", 200), ("Bearer abc def", 401), (None, 401)):
            headers = {"Authorization": header} if header is not None else {}
            async with session.get(f"{url}/api/system/version", headers=headers) as resp:
                assert resp.status == status, header


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
