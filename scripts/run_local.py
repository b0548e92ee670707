"""Run Vigil on this machine: a broker, the demo target, three regional probes, the aggregator.

Prints every result and every verdict the aggregator records, as they arrive over MQTT.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.state import StateRecord  # noqa: E402
from demo.local import mosquitto_binary, mosquitto_conf, port_or_free, wait_port  # noqa: E402
from wire.result import Presence, ProbeResult  # noqa: E402 - after the path fix above
from wire.topics import PRESENCE_FILTER, RESULTS_FILTER, STATE_FILTER  # noqa: E402

REGIONS = ("us-east", "eu-west", "ap-southeast")


def line(result: ProbeResult) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(result.started_at))
    verdict = "ok  " if result.ok else "FAIL"
    detail = f"{result.status_code or '-'} {result.duration_ms:6.1f}ms"
    if not result.ok:
        detail += f" {result.error_kind}: {result.error}"
    streak = f"+{result.consecutive_successes}" if result.ok else f"-{result.consecutive_failures}"
    version = result.version or (f"version:{result.version_error}" if result.version_error else "")
    where = f"{result.region:13} {result.target:6}"
    return f"{stamp} {where} {verdict} streak {streak:4} {detail} {version}"


async def watch(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="vigil-run-watch") as client:
        await client.subscribe(RESULTS_FILTER, qos=1)
        await client.subscribe(PRESENCE_FILTER, qos=1)
        await client.subscribe(STATE_FILTER, qos=1)
        last_verdict: dict[str, str] = {}
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                continue
            topic = str(message.topic)
            if topic.startswith("vigil/v1/probes/"):
                p = Presence.from_json(payload)
                print(f"{'':8} probe {p.probe_id} ({p.region}) is {p.status}", flush=True)
            elif topic.startswith("vigil/v1/state/"):
                record = StateRecord.from_json(payload)
                verdict = record.verdict.value + (
                    " (degraded quorum)" if record.quorum_degraded else ""
                )
                if last_verdict.get(record.target) != verdict:
                    last_verdict[record.target] = verdict
                    since = time.strftime("%H:%M:%S", time.localtime(record.since))
                    print(
                        f"{'':8} >>> {record.target} is {verdict.upper()} since {since}", flush=True
                    )
            else:
                print(line(ProbeResult.from_json(payload)), flush=True)


def main() -> int:
    mosquitto = mosquitto_binary()
    if mosquitto is None:
        print("run: mosquitto is not installed; run ./scripts/bootstrap.sh", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="vigil-run-"))
    broker_port = port_or_free(1883)
    demo_port = port_or_free(8000)
    (work / "mosquitto.conf").write_text(mosquitto_conf(broker_port, work))
    procs: list[subprocess.Popen[bytes]] = []
    logs = (work / "processes.log").open("ab")
    try:
        procs.append(subprocess.Popen([mosquitto, "-c", str(work / "mosquitto.conf")]))
        wait_port(broker_port)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "demo.target", "--port", str(demo_port)],
                cwd=ROOT,
                stdout=logs,
                stderr=logs,
            )
        )
        wait_port(demo_port)
        for i, region in enumerate(REGIONS):
            config = work / f"probe-{region}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "region": region,
                        "probe_id": f"{region}-1",
                        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}"},
                        "listen": f"127.0.0.1:{port_or_free(9101 + i)}",
                        "targets": [
                            {
                                "name": "demo",
                                "url": f"http://127.0.0.1:{demo_port}",
                                "interval": "5s",
                                "timeout": "2s",
                            }
                        ],
                    }
                )
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "probe", "--config", str(config)],
                    cwd=ROOT,
                    stdout=logs,
                    stderr=logs,
                )
            )
        aggregator_port = port_or_free(8080)
        aggregator_config = work / "aggregator.yaml"
        aggregator_config.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}"},
                    "listen": f"127.0.0.1:{aggregator_port}",
                    "regions": list(REGIONS),
                    "client_id": "vigil-aggregator-local",
                }
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "aggregator", "--config", str(aggregator_config)],
                cwd=ROOT,
                stdout=logs,
                stderr=logs,
            )
        )
        wait_port(aggregator_port)
        demo = f"http://127.0.0.1:{demo_port}"
        api = f"http://127.0.0.1:{aggregator_port}"
        print(
            f"Vigil is running: broker mqtt://127.0.0.1:{broker_port}, demo target {demo},\n"
            f"probes for {', '.join(REGIONS)} (metrics on 127.0.0.1:9101-9103),\n"
            f"aggregator {api} (/api/v1/status, /metrics). Logs: {work}\n"
            "Break the target everywhere, or for one region, then heal it:\n"
            f'  curl -X POST {demo}/_demo/state -d \'{{"mode": "fail"}}\'\n'
            f'  curl -X POST {demo}/_demo/state -d \'{{"mode": "fail", "region": "eu-west"}}\'\n'
            f"  curl -X POST {demo}/_demo/state -d '{{\"reset\": true}}'\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch(broker_port))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
        print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
