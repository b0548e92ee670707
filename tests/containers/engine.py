"""A container engine for the image and compose tests: Docker when a daemon answers, else podman.

podman runs with its own settings in a private directory (never the host's): `runc` (crun
rejects hybrid cgroup hosts), the overlay driver written before podman first touches its
store (otherwise every `run --rm` hangs 20 s in cleanup), cgroupfs and file events (no
systemd), and default ulimits no higher than this host's hard limit.

Images nobody can pull (no registry reachable) are made here: a Debian base by debootstrap
from the mirror the host's apt already uses, and stand-ins for the third-party images
`deploy/docker-compose.yml` names, from Debian's packages (`standins/Containerfile`).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
STANDINS = Path(__file__).resolve().parent / "standins" / "Containerfile"

# The Dockerfile's default base, and what is built in its place when it cannot be pulled.
OFFICIAL_BASE = "docker.io/library/python:3.11-slim"
LOCAL_BASE = "localhost/vigil-base:bookworm"
# The same Debian with its package lists, for the stand-ins' apt-get.
LOCAL_APT_BASE = "localhost/vigil-debian-apt:bookworm"
# Debian's Python 3.11, venv and CA bundle: what the official slim image brings.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Left out of the Vigil base (kept in the apt base): package lists, docs, manuals, locales.
TRIM = ("var/lib/apt/lists/", "usr/share/doc/", "usr/share/man/", "usr/share/locale/")
# The compose service whose image each stand-in stage replaces.
STANDIN_STAGES = {
    "mosquitto": "mosquitto",
    "prometheus": "prometheus",
    "alertmanager": "alertmanager",
}

BUILD_TIMEOUT_S = 900.0


class EngineError(RuntimeError):
    """No usable container engine, or a step that needs one failed."""


@dataclass(frozen=True)
class Engine:
    """One container engine CLI and the environment it runs with."""

    binary: str
    env: dict[str, str]
    podman: bool
    home: Path

    def run(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`<engine> args...`, output captured; a non-zero exit raises when `check`."""
        done = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise EngineError(
                f"{Path(self.binary).name} {' '.join(args[:3])} ... exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def image_exists(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def image(self, name: str) -> dict[str, Any]:
        """The engine's inspect record of an image."""
        found = json.loads(self.run("image", "inspect", name).stdout)
        assert isinstance(found, list)
        assert found
        record: dict[str, Any] = found[0]
        return record

    def healthcheck(self, name: str) -> list[str] | None:
        """The image's HEALTHCHECK command (podman and Docker keep it in different places)."""
        record = self.image(name)
        check = record.get("Healthcheck") or record.get("Config", {}).get("Healthcheck")
        if not check:
            return None
        test = check.get("Test")
        return list(test) if test else None

    def pull(self, name: str) -> bool:
        """Whether `name` could be pulled (no registry reachable: False, quickly)."""
        try:
            return self.run("pull", "-q", name, timeout=120.0, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def compose(self) -> list[str]:
        """The compose command for this engine."""
        if not self.podman:
            return [self.binary, "compose"]
        found = shutil.which("podman-compose")
        if found is None:
            raise EngineError(
                "podman-compose is not installed (scripts/bootstrap.sh --test installs it)"
            )
        return [found]


def detect(home: Path) -> Engine:
    """Docker when its daemon answers, else podman with private settings under `home`.

    Raises:
        EngineError: neither is usable (a failure, never a skip).
    """
    docker = shutil.which("docker")
    if docker is not None:
        try:
            answered = subprocess.run(
                [docker, "info"], capture_output=True, timeout=20, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            answered = 1
        if answered == 0:
            return Engine(docker, dict(os.environ), podman=False, home=home)
    podman = shutil.which("podman")
    if podman is None:
        raise EngineError(
            "no Docker daemon answers and podman is not installed: run scripts/bootstrap.sh "
            "--test (as root), which installs podman, runc, debootstrap and podman-compose"
        )
    if os.geteuid() != 0:
        raise EngineError("the podman path runs as root (debootstrap and runc need it)")
    env = dict(os.environ)
    env.update(podman_settings(home))
    return Engine(podman, env, podman=True, home=home)


def podman_settings(home: Path) -> dict[str, str]:
    """Write podman's settings under `home`; the variables that make podman read them."""
    home.mkdir(parents=True, exist_ok=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    containers = home / "containers.conf"
    containers.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    storage = home / "storage.conf"
    storage.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{home / "storage"}"\n'
        f'runroot = "{home / "run"}"\n'
    )
    return {"CONTAINERS_CONF": str(containers), "CONTAINERS_STORAGE_CONF": str(storage)}


# -- a base image without a registry ---------------------------------------------------------


def os_codename() -> str:
    """This host's Debian codename (`VERSION_CODENAME` of /etc/os-release)."""
    text = Path("/etc/os-release").read_text()
    found = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if found is None:
        raise EngineError("/etc/os-release names no VERSION_CODENAME: not a Debian host")
    return found.group(1)


def apt_mirror(codename: str, sources: Path = Path("/etc/apt")) -> str:
    """The archive the host's apt installs `codename` from (never hard-coded here).

    Reads deb822 `*.sources` files and one-line `sources.list` entries.

    Raises:
        EngineError: no source serves `codename` itself (updates and security do not).
    """
    files = sorted((sources / "sources.list.d").glob("*.sources")) + sorted(
        [sources / "sources.list", *(sources / "sources.list.d").glob("*.list")]
    )
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {
                    k.strip().lower(): v.strip()
                    for k, v in (
                        line.split(":", 1)
                        for line in stanza.splitlines()
                        if ":" in line and not line.lstrip().startswith("#")
                    )
                }
                if (
                    "deb" in fields.get("types", "").split()
                    and codename in fields.get("suites", "").split()
                ):
                    return str(fields["uris"].split()[0])
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                    return words[1]
    raise EngineError(f"no apt source for {codename} under {sources}: cannot debootstrap a base")


def build_local_base(engine: Engine) -> None:
    """Bootstrap Debian with Python 3.11; import it as LOCAL_APT_BASE and LOCAL_BASE."""
    if shutil.which("debootstrap") is None:
        raise EngineError("debootstrap is not installed (scripts/bootstrap.sh --test installs it)")
    codename = os_codename()
    mirror = apt_mirror(codename)
    rootfs = engine.home / f"rootfs-{codename}"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    done = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            codename,
            str(rootfs),
            mirror,
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise EngineError(f"debootstrap {codename} from {mirror} failed:\n{done.stdout[-3000:]}")
    for cached in (rootfs / "var/cache/apt").glob("**/*"):
        if cached.is_file() and (cached.suffix in (".deb", ".bin")):
            cached.unlink()
    for name, trim in ((LOCAL_APT_BASE, ()), (LOCAL_BASE, TRIM)):
        archive = engine.home / "rootfs.tar"
        excludes = [f"--exclude=./{t}*" for t in trim]
        subprocess.run(
            ["tar", "-C", str(rootfs), *excludes, "-cf", str(archive), "."],
            check=True,
            timeout=BUILD_TIMEOUT_S,
        )
        engine.run(
            "import", "--change", 'CMD ["python3"]', str(archive), name, timeout=BUILD_TIMEOUT_S
        )
        archive.unlink()
    shutil.rmtree(rootfs)


def base_image(engine: Engine) -> str:
    """The Dockerfile's base: the official one when it can be pulled, else a local build."""
    if engine.image_exists(OFFICIAL_BASE) or engine.pull(OFFICIAL_BASE):
        return OFFICIAL_BASE
    if not (engine.image_exists(LOCAL_BASE) and engine.image_exists(LOCAL_APT_BASE)):
        build_local_base(engine)
    return LOCAL_BASE


# -- building --------------------------------------------------------------------------------


def pip_mounts() -> list[str]:
    """`--volume` arguments giving a build the host's pip settings and CA bundle, read-only.

    Mounted at build time only, never copied into a layer: the image holds no registry
    host, token or certificate of the machine that built it.
    """
    candidates = [
        Path("/etc/pip.conf"),
        Path("/etc/xdg/pip"),
        Path.home() / ".config" / "pip",
        Path.home() / ".pip",
        Path("/etc/ssl/certs"),
    ]
    configured = os.environ.get("PIP_CONFIG_FILE")
    if configured:
        candidates.append(Path(configured))
    mounts: list[str] = []
    for path in candidates:
        if path.exists():
            real = path.resolve()
            mounts += ["--volume", f"{real}:{path}:ro"]
    return mounts


def build_vigil(engine: Engine, base: str, tag: str) -> None:
    """Build the project's Dockerfile as `tag`, unchanged but for its BASE_IMAGE."""
    args = ["build", "--build-arg", f"BASE_IMAGE={base}", "--tag", tag]
    if engine.podman:
        # Docker's format keeps HEALTHCHECK and STOPSIGNAL; host network for pip.
        args += ["--format", "docker", "--pull=never", "--network", "host", *pip_mounts()]
    engine.run(*args, str(ROOT), timeout=BUILD_TIMEOUT_S)


def third_party_images() -> dict[str, str]:
    """The services of the compose file that run a published image: service -> image."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {
        name: spec["image"]
        for name, spec in services.items()
        if "image" in spec and "build" not in spec
    }


def qualified(image: str) -> str:
    """The name Docker resolves a short image name to (what podman must find locally)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def ensure_standins(engine: Engine) -> dict[str, str]:
    """Every third-party image compose needs, present: pulled, or built as a stand-in.

    Returns service -> "pulled" | "present" | "stand-in", for the record.
    """
    made: dict[str, str] = {}
    for service, image in third_party_images().items():
        name = qualified(image)
        if engine.image_exists(name):
            made[service] = "present"
        elif engine.pull(name):
            made[service] = "pulled"
        else:
            stage = STANDIN_STAGES.get(service)
            if stage is None:
                raise EngineError(f"{image} cannot be pulled and has no stand-in ({STANDINS})")
            if not engine.image_exists(LOCAL_APT_BASE):
                build_local_base(engine)
            args = ["build", "--target", stage, "--build-arg", f"APT_BASE={LOCAL_APT_BASE}"]
            if engine.podman:
                args += ["--format", "docker", "--pull=never", "--network", "host"]
            engine.run(
                *args,
                "--tag",
                name,
                "--file",
                str(STANDINS),
                str(STANDINS.parent),
                timeout=BUILD_TIMEOUT_S,
            )
            made[service] = "stand-in"
    return made
