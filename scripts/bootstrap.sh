#!/usr/bin/env bash
# Make this checkout runnable on a fresh Debian/Ubuntu machine:
#   - Debian packages Vigil needs: mosquitto; with --test also prometheus-alertmanager,
#     prometheus (for promtool), faketime (clock-skew fault tests), chromium, which
#     Playwright drives without downloading a browser, and (without a Docker daemon)
#     podman, runc, podman-compose and debootstrap for the image tests; with --bench also prometheus-alertmanager and prometheus-blackbox-exporter;
#     installed with apt-get when missing (as root, or through sudo);
#   - a virtualenv in .venv with Vigil and its test tools installed from
#     requirements/test-lock.txt.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || packages+=(mosquitto)
case "${1:-}" in
  --test)
    command -v prometheus-alertmanager >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
    command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
    # libfaketime: the clock-skew fault tests run a probe with its wall clock shifted.
    command -v faketime >/dev/null 2>&1 || packages+=(faketime)
    # The image and compose tests (make test-images): Docker when its daemon answers, else
    # podman with runc, debootstrap for a base image without a registry, podman-compose and
    # the CNI plugin that lets compose services find each other by name.
    # debootstrap either way: a base image where no registry answers.
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || packages+=(debootstrap)
    if ! { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }; then
      command -v podman >/dev/null 2>&1 || packages+=(podman)
      command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || packages+=(runc)
      command -v podman-compose >/dev/null 2>&1 || packages+=(podman-compose)
      [ -x /usr/lib/cni/dnsname ] || packages+=(golang-github-containernetworking-plugin-dnsname)
    fi
    ;;
  --bench)
    command -v prometheus-alertmanager >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
    command -v prometheus-blackbox-exporter >/dev/null 2>&1 || packages+=(prometheus-blackbox-exporter)
    ;;
esac

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Vigil needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
"$PY" -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "bootstrap: need root or sudo to install: ${packages[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages: ${packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  # Debian starts packaged services where it can; Vigil's tests and `make run` start their own.
  for service in mosquitto prometheus-alertmanager prometheus; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
      $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
fi

# Dependencies come from the lock, exact and hash-checked: the versions the image ships plus
# the test tools (`make lock` rewrites it after a change to pyproject.toml's dependencies).
# Vigil itself is then installed without resolving anything again.
lock=requirements/test-lock.txt
stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$lock"
  .venv/bin/python -m pip install -q --no-deps -e .
  if ! broken=$(.venv/bin/python -m pip check); then
    echo "$broken" >&2
    echo "bootstrap: $lock does not satisfy pyproject.toml; run: make lock" >&2
    exit 1
  fi
  touch "$stamp"
fi
