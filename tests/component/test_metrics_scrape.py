"""`/metrics` of a large aggregator over HTTP: valid text, and the event loop keeps serving."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aggregator.app import Aggregator, build
from aggregator.config import AggregatorConfig, MetricsConfig
from aggregator.edges.http import make_app
from tests.rulekit import REGIONS, RegionProbe
from wire.topics import result_topic

# Big enough that rendering it in one go (the old handler) held the loop for seconds.
LARGE = 5_000
# Far above a slice of the stepped rendering (5 ms), far below the old stall: a loaded
# machine may add tens of milliseconds, never this.
MAX_LAG = 0.5


def loaded(targets: int, metrics: MetricsConfig | None = None) -> Aggregator:
    """An aggregator past warm-up with `targets` targets, one result from each region."""
    offset = [0.0]
    agg = build(
        AggregatorConfig(
            regions=list(REGIONS), startup_grace=1, metrics=metrics or MetricsConfig()
        ),
        CollectorRegistry(),
        None,
        clock=lambda: time.time() + offset[0],
        send_alerts=lambda _payloads: None,
    )
    agg.pipeline.set_connected(True)
    agg.pipeline.tick(subscribed=True)
    offset[0] = 2.0  # past the startup grace: verdicts are live
    agg.pipeline.tick(subscribed=True)
    now = time.time()
    for i in range(targets):
        for region in REGIONS:
            probe = RegionProbe(region, target=f"t{i}")
            version = '3.8"\\\n' if i == 0 else "3.8"
            result = probe.check(i % 5 != 0, now - 1, version=version)
            agg.pipeline.handle(result_topic(region, probe.target), result.to_json(), False)
    return agg


async def test_the_loop_keeps_serving_while_a_large_scrape_is_made() -> None:
    """During a scrape of 5,000 targets, /healthz answers and the loop is never held long."""
    agg = loaded(LARGE)
    loop = asyncio.get_running_loop()
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as client:
        scrape = asyncio.create_task(client.get("/metrics"))
        lags: list[float] = []
        answered_during = 0
        while not scrape.done():
            started = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - started - 0.01)
            if not scrape.done():
                health = await client.get("/healthz")
                answered_during += health.status == 200 and not scrape.done()
        response = await scrape
        body = await response.text()
    assert response.status == 200
    assert answered_during > 0
    assert max(lags) < MAX_LAG, f"the loop was held {max(lags):.3f} s"
    assert body.count("\nprobe_success{") == LARGE * len(REGIONS)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `make test`, which installs it from Debian")
    return path


@pytest.mark.parametrize("histograms", ["on", "off"])
async def test_the_scrape_is_valid_text_whatever_the_client_asks(histograms: str) -> None:
    """Gzipped or not, OpenMetrics asked or not: text format 0.0.4 that promtool accepts."""
    agg = loaded(20, MetricsConfig(latency_histograms=histograms))  # type: ignore[arg-type]
    async with TestClient(TestServer(make_app(agg.http_deps()), host="127.0.0.1")) as client:
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        zipped = await client.get(
            "/metrics",
            headers={
                "Accept-Encoding": "gzip",
                "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
                "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            },
            auto_decompress=False,
        )
        plain_body = await plain.read()
        zipped_body = await zipped.read()
        head = await client.head("/metrics")
        assert (head.status, await head.read()) == (200, b"")
        assert (await client.get("/healthz")).status == 200  # the connection survives a HEAD
    for response in (plain, zipped):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert int(plain.headers["Content-Length"]) == len(plain_body)
    assert gzip.decompress(zipped_body) == plain_body
    text = plain_body.decode()
    versions = {
        s.labels["version"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "vigil_target_version_info"
    }
    assert versions == {"3.8", '3.8"\\\n'}
    assert ("vigil_probe_latency_seconds_bucket" in text) is (histograms == "on")
    check = await asyncio.create_subprocess_exec(
        promtool(),
        "check",
        "metrics",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(check.communicate(plain_body), 60)
    assert check.returncode == 0, out.decode()


async def test_a_head_asking_for_gzip_leaves_nothing_on_the_connection() -> None:
    """Two HEADs pipelined on one connection get two bare responses, no stray body bytes."""
    agg = loaded(5, MetricsConfig())
    server = TestServer(make_app(agg.http_deps()), host="127.0.0.1")
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        writer.write(head * 2)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
    finally:
        await server.close()
    assert first.startswith(b"HTTP/1.1 200")
    # A compressor's header or trailer written after the first head would come first here.
    assert second.startswith(b"HTTP/1.1 200"), second[:40]
