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

import functools
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import time
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
# The same Debian with its package lists and sources, for the stand-ins' apt-get only.
LOCAL_APT_BASE = "localhost/vigil-debian-apt:bookworm"
# The stand-ins' names: never the official ones, so no store ever mistakes one for the
# real image (the compose copy the test runs names these instead).
STANDIN_PREFIX = "localhost/vigil-standin-"
# A base older than this is built again: a test base gets Debian's updates weekly.
BASE_MAX_AGE_S = 7 * 24 * 3600
# Debian's Python 3.11, venv and CA bundle: what the official slim image brings.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Left out of the Vigil base (kept in the apt base): package lists, docs, manuals, locales,
# and the apt sources (the build host's mirror is not the image's business).
TRIM = (
    "var/lib/apt/lists/",
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/locale/",
    "etc/apt/sources.list",
)
# Copied from the build host by debootstrap; emptied in both images (runtimes mount their own).
HOST_FILES = ("etc/resolv.conf", "etc/hostname")
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

    def healthy(self, name: str) -> bool:
        """The container's HEALTHCHECK passes (podman here has no systemd timer: run it)."""
        if self.podman:
            return self.run("healthcheck", "run", name, check=False).returncode == 0
        status = self.run("inspect", "--format", "{{.State.Health.Status}}", name).stdout
        return status.strip() == "healthy"

    def pull(self, name: str) -> bool:
        """Whether `name` could be pulled (no registry reachable: False, quickly)."""
        if not registry_reachable(name):
            return False
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


@functools.cache
def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=5.0):
            return True
    except OSError:
        return False


def registry_reachable(image: str) -> bool:
    """Whether the registry of `image` accepts a connection (asked once per host, 5 s).

    Where a firewall drops packets instead of refusing them, each pull would otherwise
    wait out its own timeout.
    """
    first = image.split("/", 1)[0]
    host = first if "." in first or ":" in first else "registry-1.docker.io"
    return _reachable(host.split(":")[0])


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
        "[network]\n"
        # CNI, whose networks compose makes live here too, not in the host's /etc/cni/net.d.
        'network_backend = "cni"\n'
        f'network_config_dir = "{home / "networks"}"\n'
    )
    storage = home / "storage.conf"
    storage.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{home / "storage"}"\n'
        f'runroot = "{home / "run"}"\n'
    )
    return {
        "CONTAINERS_CONF": str(containers),
        "CONTAINERS_STORAGE_CONF": str(storage),
        # No systemd timers for HEALTHCHECKs: on a systemd host they would run podman with
        # the host's settings, not these (the tests run the checks themselves).
        "DISABLE_HC_SYSTEMD": "true",
    }


# -- a base image without a registry ---------------------------------------------------------


def os_codename() -> str:
    """This host's Debian codename (`VERSION_CODENAME` of /etc/os-release)."""
    text = Path("/etc/os-release").read_text()
    found = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if found is None:
        raise EngineError("/etc/os-release names no VERSION_CODENAME: not a Debian host")
    return found.group(1)


def _usable_uri(uri: str) -> str | None:
    """An archive URL debootstrap can fetch from, for an apt source URI (None: cannot)."""
    if uri.startswith("mirror+file:"):
        # apt's mirror method: a local list of archive URLs, one per line, best first.
        listing = Path(uri.removeprefix("mirror+file:"))
        if listing.is_file():
            for line in listing.read_text().splitlines():
                url = line.split("\t", 1)[0].strip()
                if url.startswith(("http://", "https://")):
                    return url
        return None
    return uri if uri.startswith(("http://", "https://", "file:/")) else None


def apt_mirror(codename: str, sources: Path = Path("/etc/apt")) -> str:
    """The archive the host's apt installs `codename` from (never hard-coded here).

    Reads deb822 `*.sources` files (skipping `Enabled: no`) and one-line `sources.list`
    entries; resolves apt's `mirror+file:` lists to their first URL.

    Raises:
        EngineError: no usable source serves `codename` itself (updates and security do not).
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
                    fields.get("enabled", "yes").lower() != "no"
                    and "deb" in fields.get("types", "").split()
                    and codename in fields.get("suites", "").split()
                ):
                    for uri in fields.get("uris", "").split():
                        if (usable := _usable_uri(uri)) is not None:
                            return usable
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if (
                    len(words) >= 3
                    and words[0] == "deb"
                    and words[2] == codename
                    and (usable := _usable_uri(words[1])) is not None
                ):
                    return usable
    raise EngineError(f"no apt source for {codename} under {sources}: cannot debootstrap a base")


def apt_proxy() -> dict[str, str]:
    """The host apt's HTTP proxy as `http_proxy`, for debootstrap and the stand-ins' apt."""
    if os.environ.get("http_proxy"):
        return {}
    try:
        done = subprocess.run(
            ["apt-config", "shell", "PROXY", "Acquire::http::Proxy"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = re.search(r"PROXY='([^']+)'", done.stdout)
    return {"http_proxy": found.group(1)} if found else {}


def _debootstrap() -> str:
    found = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if found is None:
        raise EngineError("debootstrap is not installed (scripts/bootstrap.sh --test installs it)")
    return found


def base_key(codename: str, mirror: str) -> str:
    """What the local base is made of: a base made of something else is built again."""
    recipe = json.dumps([codename, mirror, BASE_PACKAGES, TRIM, HOST_FILES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_local_base(engine: Engine) -> None:
    """Bootstrap Debian with Python 3.11; import it as LOCAL_APT_BASE and LOCAL_BASE."""
    debootstrap = _debootstrap()
    codename = os_codename()
    mirror = apt_mirror(codename)
    rootfs = engine.home / f"rootfs-{codename}"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    done = subprocess.run(
        [
            debootstrap,
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
        env={**os.environ, **apt_proxy()},
    )
    if done.returncode != 0:
        log = rootfs / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-3000:] if log.is_file() else done.stdout[-2000:]
        raise EngineError(
            f"debootstrap {codename} from {mirror} failed:\n{detail}\n{done.stderr[-1000:]}"
        )
    for cached in (rootfs / "var/cache/apt").glob("**/*"):
        if cached.is_file() and (cached.suffix in (".deb", ".bin")):
            cached.unlink()
    for host_file in HOST_FILES:
        (rootfs / host_file).write_text("")
    labels = [
        "--change",
        f"LABEL vigil.base.key={base_key(codename, mirror)}",
        "--change",
        f"LABEL vigil.base.built={int(time.time())}",
    ]
    for name, trim in ((LOCAL_APT_BASE, ()), (LOCAL_BASE, TRIM)):
        archive = engine.home / "rootfs.tar"
        excludes = [f"--exclude=./{t}*" for t in trim]
        subprocess.run(
            ["tar", "-C", str(rootfs), *excludes, "-cf", str(archive), "."],
            check=True,
            timeout=BUILD_TIMEOUT_S,
        )
        engine.run(
            "import",
            "--change",
            'CMD ["python3"]',
            *labels,
            str(archive),
            name,
            timeout=BUILD_TIMEOUT_S,
        )
        archive.unlink()
    shutil.rmtree(rootfs)


def _local_base_current(engine: Engine) -> bool:
    if not (engine.image_exists(LOCAL_BASE) and engine.image_exists(LOCAL_APT_BASE)):
        return False
    labels = engine.image(LOCAL_BASE).get("Config", {}).get("Labels") or {}
    codename = os_codename()
    key = base_key(codename, apt_mirror(codename))
    built = int(labels.get("vigil.base.built", "0"))
    return bool(labels.get("vigil.base.key") == key and time.time() - built < BASE_MAX_AGE_S)


def base_image(engine: Engine) -> str:
    """The Dockerfile's base: the official one when it can be pulled, else a local build."""
    if engine.image_exists(OFFICIAL_BASE) or engine.pull(OFFICIAL_BASE):
        return OFFICIAL_BASE
    if not _local_base_current(engine):
        build_local_base(engine)
    return LOCAL_BASE


# -- building --------------------------------------------------------------------------------


def pip_mounts() -> list[str]:
    """`--volume` arguments giving a build the host's pip settings and CA bundle, read-only.

    Mounted at build time only, never copied into a layer: the image holds no registry
    host, token or certificate of the machine that built it. (Settings given only as
    PIP_* variables do not reach the build: put them in /etc/pip.conf.)
    """
    candidates = [
        Path("/etc/pip.conf"),
        Path("/etc/xdg/pip"),
        Path.home() / ".config" / "pip",
        Path.home() / ".pip",
        Path("/etc/ssl/certs"),
        # Where /etc/ssl/certs' links to local CAs point.
        Path("/usr/local/share/ca-certificates"),
        Path("/usr/share/ca-certificates"),
    ]
    mounts: list[str] = []
    for path in candidates:
        if path.exists():
            mounts += ["--volume", f"{path.resolve()}:{path}:ro"]
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
    """The name Docker resolves a short image name to."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def ensure_standins(engine: Engine) -> dict[str, str]:
    """An image for every third-party service of compose: service -> the image to run.

    The official image when it is present or can be pulled; else a stand-in built from
    Debian's packages under its own name (STANDIN_PREFIX), rebuilt every time from cached
    layers so a changed Containerfile is what runs.
    """
    chosen: dict[str, str] = {}
    for service, image in third_party_images().items():
        name = qualified(image)
        if engine.image_exists(name) or engine.pull(name):
            chosen[service] = name
            continue
        stage = STANDIN_STAGES.get(service)
        if stage is None:
            raise EngineError(f"{image} cannot be pulled and has no stand-in ({STANDINS})")
        if not engine.image_exists(LOCAL_APT_BASE):
            build_local_base(engine)
        standin = f"{STANDIN_PREFIX}{stage}:{image.rsplit(':', 1)[-1]}"
        args = ["build", "--target", stage, "--build-arg", f"APT_BASE={LOCAL_APT_BASE}"]
        if engine.podman:
            args += ["--format", "docker", "--pull=never", "--network", "host"]
        engine.run(
            *args,
            "--tag",
            standin,
            "--file",
            str(STANDINS),
            str(STANDINS.parent),
            timeout=BUILD_TIMEOUT_S,
        )
        chosen[service] = standin
    return chosen


# Names the tests give what they start; `sweep` removes what a killed run left.
TEST_PREFIXES = ("vigil-test-", "vigilsmoke")


def sweep(engine: Engine) -> list[str]:
    """Remove containers, volumes and networks a killed earlier run left; their names."""
    gone: list[str] = []
    listing = engine.run("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
    for name in listing:
        if name.startswith(TEST_PREFIXES):
            engine.run("rm", "--force", "--volumes", name, check=False, timeout=120)
            gone.append(name)
    for kind in ("volume", "network"):
        names = engine.run(kind, "ls", "--format", "{{.Name}}", check=False).stdout.split()
        for name in names:
            if name.startswith(TEST_PREFIXES):
                engine.run(kind, "rm", "--force", name, check=False)
                gone.append(name)
    return gone
