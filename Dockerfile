# Vigil: one image for the probe agent, the aggregator and the demo target.
# Build: docker build -t vigil .   Run: set VIGIL_CONFIG and the command (see deploy/).

FROM python:3.11-slim AS build
WORKDIR /src
# Wheels for exactly the locked, hash-checked versions the tests ran against (`make lock`),
# uvloop included, then Vigil's own without resolving again; nothing else leaves this stage.
COPY requirements/lock.txt requirements/lock.txt
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/lock.txt
COPY pyproject.toml README.md ./
COPY wire wire
COPY runtime runtime
COPY probe probe
COPY aggregator aggregator
COPY demo demo
COPY cli cli
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin vigil
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl && pip check \
    && rm -rf /wheels
USER vigil
# Each service reads its config from here unless --config says otherwise.
ENV VIGIL_CONFIG=/config/vigil.yaml \
    VIGIL_HEALTH_URL=http://127.0.0.1:8080/healthz \
    PYTHONUNBUFFERED=1
# Probes listen on 9101: their containers set VIGIL_HEALTH_URL=http://127.0.0.1:9101/healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['VIGIL_HEALTH_URL'], timeout=2)"]
EXPOSE 8080 9101
ENTRYPOINT ["vigil-aggregator"]
