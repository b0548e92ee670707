"""`vigil demo`: the whole of Vigil on one machine, without Docker, until Ctrl-C.

Starts a broker (Debian's mosquitto), the demo target (unless `--target` names a real
service), three probes labelled as three regions, the aggregator, and a local Alertmanager
when its binary is installed (else alerts go to the console). Prints every result, every
verdict change and every alert as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from pydantic import ValidationError

from demo.local import (
    alertmanager_args,
    alertmanager_binary,
    alertmanager_config,
    mosquitto_binary,
    mosquitto_conf,
    port_or_free,
    wait_port,
)
from wire.result import Presence, ProbeResult
from wire.state import StateRecord
from wire.topics import ALL_FILTERS, Kind, topic_kind

REGIONS = ("us-east", "eu-west", "ap-southeast")


@dataclass
class Children:
    """Every process the demo started, stopped together and waited for."""

    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        """Start one process, its output in `<work>/<name>.log`."""
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                # Their own process group: Ctrl-C reaches the demo, which stops them in order.
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """SIGTERM everything, newest first; kill what has not exited within 20 s."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _line(r: ProbeResult) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(r.started_at))
    verdict = "ok  " if r.ok else "FAIL"
    streak = f"+{r.consecutive_successes}" if r.ok else f"-{r.consecutive_failures}"
    detail = f"{r.status_code or '-'} {r.duration_ms:6.1f}ms"
    if not r.ok:
        detail += f" {r.error_kind}: {r.error}"
    version = r.version or (f"version:{r.version_error}" if r.version_error else "")
    return f"{stamp} {r.region:13} {r.target:6} {verdict} streak {streak:4} {detail} {version}"


def watch_line(topic: str, payload: bytes, verdicts: dict[str, str]) -> str | None:
    """What the demo prints for one message on Vigil's topics; None when nothing changed.

    Anyone on the broker can publish there: a message the contract refuses is reported in
    one line, never allowed to end the demo (and with it every process it started).
    """
    kind = topic_kind(topic)
    try:
        if kind is Kind.PRESENCE:
            p = Presence.from_json(payload)
            return f"{'':8} probe {p.probe_id} ({p.region}) is {p.status}"
        if kind is Kind.STATE:
            record = StateRecord.from_json(payload)
            verdict = record.verdict.value + (
                " (degraded quorum)" if record.quorum_degraded else ""
            )
            if verdicts.get(record.target) == verdict:
                return None
            verdicts[record.target] = verdict
            return f"{'':8} >>> {record.target} is {verdict.upper()}"
        if kind is Kind.RESULT:
            return _line(ProbeResult.from_json(payload))
    except ValidationError as exc:
        return f"{'':8} (ignored an invalid message on {topic[:80]}: {exc.error_count()} errors)"
    return None


async def _watch_mqtt(port: int) -> None:
    verdicts: dict[str, str] = {}
    while True:
        # A broker restart must not end the demo (and every process it started): reconnect.
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="vigil-demo-watch") as client:
                for topic in ALL_FILTERS:
                    await client.subscribe(topic, qos=1)
                async for message in client.messages:
                    payload = message.payload
                    if not isinstance(payload, bytes):
                        continue
                    line = watch_line(str(message.topic), payload, verdicts)
                    if line is not None:
                        print(line, flush=True)
        except aiomqtt.MqttError as exc:
            print(f"{'':8} (lost the broker: {exc}; reconnecting)", flush=True)
            await asyncio.sleep(1)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own loopback URL
        return json.loads(resp.read())


async def _watch_alerts(api: str) -> None:
    firing: set[str] = set()
    while True:
        await asyncio.sleep(2)
        with contextlib.suppress(OSError, ValueError):
            alerts = await asyncio.to_thread(_get, f"{api}/api/v1/alerts")
            now = {json.dumps(a["labels"], sort_keys=True): a for a in alerts["firing"]}
            for key in now.keys() - firing:
                print(
                    f"{'':8} ALERT FIRING {now[key]['labels']['alertname']}: "
                    f"{now[key]['annotations'].get('summary', '')}",
                    flush=True,
                )
            for key in firing - now.keys():
                print(f"{'':8} alert resolved {json.loads(key)['alertname']}", flush=True)
            firing = set(now)


async def _watch(broker_port: int, api: str) -> None:
    await asyncio.gather(_watch_mqtt(broker_port), _watch_alerts(api))


def _alertmanager(children: Children, work: Path) -> str | None:
    binary = alertmanager_binary()
    if binary is None:
        return None
    port = port_or_free(9093)
    config = work / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config()))
    children.start(alertmanager_args(binary, config, work / "alertmanager", port), "alertmanager")
    wait_port(port)
    return f"http://127.0.0.1:{port}"


def _embedded_available() -> bool:
    try:
        import amqtt  # noqa: F401
    except ImportError:
        return False
    return True


def run(port: int, target: str | None, broker: str = "auto") -> int:
    """Start everything, watch until Ctrl-C, stop everything; returns the exit code.

    `broker`: `mosquitto`, `embedded` (amqtt, in its own process) or `auto` (mosquitto when
    installed, else embedded).
    """
    mosquitto = mosquitto_binary()
    if broker == "auto":
        broker = "mosquitto" if mosquitto is not None else "embedded"
    if broker == "mosquitto" and mosquitto is None:
        print("vigil demo: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 1
    if broker == "embedded" and not _embedded_available():
        print(
            "vigil demo: no mosquitto and no embedded broker: apt-get install mosquitto, or "
            "pip install 'vigil[demo]'",
            file=sys.stderr,
        )
        return 1
    # amqtt speaks MQTT 3.1.1 only and never answers an MQTT 5 CONNECT: `auto` would find
    # that out, but only after a 10 s timeout per service.
    protocol = "3.1.1" if broker == "embedded" else "auto"
    work = Path(tempfile.mkdtemp(prefix="vigil-demo-"))
    children = Children(work)
    py = sys.executable
    try:
        broker_port = port_or_free(1883)
        if broker == "mosquitto" and mosquitto is not None:
            (work / "mosquitto.conf").write_text(mosquitto_conf(broker_port, work))
            children.start([mosquitto, "-c", str(work / "mosquitto.conf")], "mosquitto")
        else:
            children.start([py, "-m", "demo.broker", "--port", str(broker_port)], "broker")
        wait_port(broker_port)
        own_target = target is None
        if target is None:
            demo_port = port_or_free(8000)
            children.start([py, "-m", "demo.target", "--port", str(demo_port)], "demo-target")
            wait_port(demo_port)
            target = f"http://127.0.0.1:{demo_port}"
        watched = "the demo target" if own_target else target
        am = _alertmanager(children, work)
        mqtt = {"url": f"mqtt://127.0.0.1:{broker_port}", "protocol": protocol}
        agg_config: dict[str, Any] = {
            "mqtt": mqtt,
            "listen": f"127.0.0.1:{port}",
            "regions": list(REGIONS),
            "client_id": "vigil-demo-aggregator",
            "startup_grace": "2s",
        }
        if am is not None:
            agg_config["alertmanager"] = {"urls": [am], "resend_interval": "30s"}
        (work / "aggregator.yaml").write_text(yaml.safe_dump(agg_config))
        children.start(
            [py, "-m", "aggregator", "--config", str(work / "aggregator.yaml")], "aggregator"
        )
        for i, region in enumerate(REGIONS):
            config = work / f"probe-{region}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "region": region,
                        "probe_id": f"{region}-1",
                        "mqtt": mqtt,
                        "listen": f"127.0.0.1:{port_or_free(9101 + i)}",
                        "targets": [
                            {"name": "demo", "url": target, "interval": "5s", "timeout": "2s"}
                        ],
                    }
                )
            )
            children.start([py, "-m", "probe", "--config", str(config)], f"probe-{region}")
        wait_port(port)
        page = f"http://127.0.0.1:{port}"
        demo = target
        print(
            f"Vigil demo: watching {watched} from {', '.join(REGIONS)}.\n"
            f"  Status page: {page}/   (API: {page}/api/v1/status; `vigil status --url {page}`)\n"
            f"  Broker ({broker}): mqtt://127.0.0.1:{broker_port}   "
            f"Alertmanager: {am or 'none (alerts print here)'}\n"
            f"  Logs: {work}\n",
            flush=True,
        )
        if own_target:
            post = f"  curl -X POST {demo}/_demo/state -d"
            print(
                "Break it everywhere, in one region, slow it down, then heal it:\n"
                f"""{post} '{{"mode": "fail"}}'\n"""
                f"""{post} '{{"mode": "fail", "region": "eu-west"}}'\n"""
                f"""{post} '{{"mode": "slow", "delay_ms": 300}}'\n"""
                f"""{post} '{{"reset": true}}'\n""",
                flush=True,
            )
        print("Ctrl-C stops everything.\n", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_watch(broker_port, page))
    finally:
        children.stop()
        print("vigil demo: stopped.", flush=True)
    return 0
