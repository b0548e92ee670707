# Vigil: one image for the probe agent, the aggregator and the demo target.
# Build: docker build -t vigil .   Run: set VIGIL_CONFIG and the command (see deploy/).
# --build-arg BASE_IMAGE=... substitutes a local or mirrored base (the same for both stages:
# the venv's interpreter is the base's /usr/local/bin/python3); VERSION, SOURCE_URL and
# REVISION fill the OCI labels.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/vigil
WORKDIR /src
# Exactly the locked, hash-checked versions the tests ran against (`make lock`), uvloop
# included, as wheels only: the base has no compiler and the image never needs one.
COPY requirements/lock.txt requirements/lock.txt
RUN /opt/vigil/bin/pip install --require-hashes --only-binary=:all: -r requirements/lock.txt
COPY pyproject.toml README.md ./
COPY wire wire
COPY runtime runtime
COPY probe probe
COPY aggregator aggregator
COPY demo demo
COPY cli cli
# Vigil itself, without resolving again (not editable: the venv holds the app, /src stays here).
# Then pip and setuptools leave the venv: nothing installs at run time (25 MB less).
RUN /opt/vigil/bin/pip install --no-deps . && /opt/vigil/bin/pip check \
    && /opt/vigil/bin/python -m pip uninstall -y -q pip setuptools

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE_URL=""
ARG REVISION=""
LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Multi-region uptime probes over MQTT, an N-of-M regions rule, Alertmanager alerts" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}"
RUN groupadd --system --gid 10001 vigil \
    && useradd --system --uid 10001 --gid vigil --home-dir /nonexistent \
       --shell /usr/sbin/nologin vigil \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/vigil
# The aggregator's history database (storage.path) lives here: mount a volume on it.
VOLUME /var/lib/vigil
# Only the venv leaves the build stage: no wheels, sources or pip caches. Owned by root, so
# the service cannot change its own code.
COPY --from=build /opt/vigil /opt/vigil
# Numeric, so an orchestrator can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# Each service reads its config from here unless --config says otherwise.
ENV PATH=/opt/vigil/bin:$PATH \
    VIGIL_CONFIG=/config/vigil.yaml \
    VIGIL_HEALTH_URL=http://127.0.0.1:8080/healthz \
    PYTHONUNBUFFERED=1
# The services stop cleanly on SIGTERM (probes flush and say offline within shutdown_timeout,
# 10 s; the aggregator within 5 s): give them longer than that (docker-compose.yml
# stop_grace_period, `docker stop -t`) before SIGKILL.
STOPSIGNAL SIGTERM
# Probes listen on 9101: their containers set VIGIL_HEALTH_URL=http://127.0.0.1:9101/healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['VIGIL_HEALTH_URL'], timeout=2)"]
EXPOSE 8080 9101
ENTRYPOINT ["vigil-aggregator"]
