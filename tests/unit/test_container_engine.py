"""The image tests' helpers that read the host: apt sources, image names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.containers.engine import EngineError, apt_mirror, qualified


def sources(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / "sources.list.d").mkdir(exist_ok=True)
    (tmp_path / "sources.list.d" / name).write_text(text)
    return tmp_path


def test_deb822_sources_give_the_release_archive_not_updates_or_security(tmp_path: Path) -> None:
    root = sources(
        tmp_path,
        "debian.sources",
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment: here\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n",
    )
    assert apt_mirror("bookworm", root) == "http://mirror.example/debian"


def test_a_disabled_stanza_and_a_source_only_stanza_are_skipped(tmp_path: Path) -> None:
    root = sources(
        tmp_path,
        "debian.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nSuites: bookworm\n\n"  # no URIs at all
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n",
    )
    assert apt_mirror("bookworm", root) == "http://on.example/debian"


def test_apt_mirror_lists_resolve_to_their_first_url(tmp_path: Path) -> None:
    listing = tmp_path / "mirrors.list"
    listing.write_text("https://cdn.example/debian\tpriority:1\nhttp://other.example/debian\n")
    root = sources(
        tmp_path,
        "debian.sources",
        f"Types: deb\nURIs: mirror+file:{listing}\nSuites: bookworm\nComponents: main\n",
    )
    assert apt_mirror("bookworm", root) == "https://cdn.example/debian"


def test_one_line_sources_with_options(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://one.example/debian"


def test_no_source_for_the_release_is_a_clear_error(tmp_path: Path) -> None:
    sources(tmp_path, "x.sources", "Types: deb\nURIs: http://x.example/\nSuites: trixie\n")
    with pytest.raises(EngineError, match="no apt source for bookworm"):
        apt_mirror("bookworm", tmp_path)


@pytest.mark.parametrize(
    ("short", "full"),
    [
        ("eclipse-mosquitto:2", "docker.io/library/eclipse-mosquitto:2"),
        ("prom/prometheus:v2.53.0", "docker.io/prom/prometheus:v2.53.0"),
        ("quay.io/prometheus/alertmanager:v0.27.0", "quay.io/prometheus/alertmanager:v0.27.0"),
        ("localhost/vigil:test", "localhost/vigil:test"),
    ],
)
def test_short_image_names_resolve_as_docker_does(short: str, full: str) -> None:
    assert qualified(short) == full
