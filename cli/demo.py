"""`vigil demo`: the whole of Vigil on one machine, without Docker, until Ctrl-C.

Starts a broker (Debian's mosquitto), the demo target (unless `--target` names a real
service), three probes labelled as three regions, the aggregator, and a local Alertmanager
when its binary is installed (else alerts go to the console). Prints every result, every
verdict change and every alert as they happen.

SIGINT (Ctrl-C), SIGTERM (`timeout`, systemd, a container stop) and SIGHUP (the terminal
went away) all stop every child in order and exit 0: the demo did what it was asked. Killed
outright (SIGKILL, a crash), it takes its children with it: the kernel kills each of them
when the demo dies (`die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import aiomqtt
import yaml
from pydantic import ValidationError

from demo.local import (
    ChildExited,
    alertmanager_args,
    alertmanager_binary,
    alertmanager_config,
    bind_error,
    die_with_parent,
    loopback_get,
    mosquitto_binary,
    mosquitto_conf,
    port_or_free,
    wait_http,
    wait_port,
)
from probe.config import parse_config as parse_probe_config
from runtime.errors import ConfigError
from wire.result import Presence, ProbeResult
from wire.state import StateRecord
from wire.topics import ALL_FILTERS, Kind, topic_kind

REGIONS = ("us-east", "eu-west", "ap-southeast")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Role = Literal["aggregator", "probe", "alertmanager", "target", "broker"]

# The order the demo stops its children in. The aggregator first: once it is gone nothing
# judges the probes' departure, so a planned stop is never a ProbeOffline alert or a region
# gone stale on the page. The probes next, while the broker is still up to take their last
# results and their `offline` presence (the retained state then says they left, not that
# their connections died). Alertmanager once nothing sends to it; the demo target once no
# probe checks it (a target gone first would be a failed check in every region); the broker
# last, since every goodbye goes through it.
STOP_ORDER: tuple[Role, ...] = ("aggregator", "probe", "alertmanager", "target", "broker")

# Per stage of STOP_ORDER; a probe needs at most its shutdown_timeout (10 s by default).
STOP_WAIT_S = 12.0


@dataclass
class Children:
    """Every process the demo started, stopped together, in order, and waited for."""

    work: Path
    procs: list[tuple[Role, str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, args: list[str], name: str, role: Role) -> subprocess.Popen[bytes]:
        """Start one process, its output in `<work>/<name>.log`.

        Raises:
            RuntimeError: called from a thread other than the main one.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start children from the main thread (see die_with_parent)")
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                # Their own session: Ctrl-C and a terminal's hangup reach only the demo,
                # which stops them in order.
                start_new_session=True,
                # Killed by the kernel when the demo dies without stopping them (SIGKILL).
                # A preexec_fn is safe here: the demo starts no thread before its children.
                preexec_fn=die_with_parent(),
            )
        self.procs.append((role, name, proc))
        return proc

    def stop(self, wait: float = STOP_WAIT_S) -> None:
        """SIGTERM each role of STOP_ORDER in turn; kill what has not exited within `wait`."""
        for role in STOP_ORDER:
            stage = [(n, p) for r, n, p in self.procs if r == role and p.poll() is None]
            for _name, proc in stage:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + wait
            for name, proc in stage:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"vigil demo: {name} did not stop within {wait:g}s; killed", flush=True)
                    proc.kill()
                    proc.wait()


@dataclass(frozen=True)
class TargetOptions:
    """The target keys `vigil demo` takes on its command line, as the probe config spells them.

    None leaves a key unset, so the target's `profile` (or the config's default) fills it.
    """

    name: str = "demo"
    profile: str | None = None
    interval: str = "5s"
    timeout: str = "2s"
    health_path: str | None = None
    # "none" skips the version check (the config's `version_path: null`).
    version_path: str | None = None
    # "FIELD=VALUE" (the health body's JSON field must equal VALUE) or "any" (any body).
    body: str | None = None
    # "Name: value", sent with every check (health and version).
    headers: tuple[str, ...] = ()
    # "Name: value", sent to the version endpoint only (e.g. a session Cookie).
    version_headers: tuple[str, ...] = ()


def split_header(text: str) -> tuple[str, str]:
    """`"Name: value"` as `("Name", "value")`.

    Raises:
        ValueError: no colon, or an empty name.
    """
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        # The text itself is not echoed: it may hold a secret.
        raise ValueError("a header is 'Name: value'; one has no name or no colon")
    return name.strip(), value.strip()


def _scalar(text: str) -> str | int | float | bool:
    """VALUE as the config file would read it: `true` a bool, `1` a number, else text.

    The probe compares the body's JSON value strictly: `"true"` is not `true`.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def target_config(url: str, options: TargetOptions) -> dict[str, Any]:
    """The probe config's entry for the watched target, from the demo's options."""
    entry: dict[str, Any] = {
        "name": options.name,
        "url": url,
        "interval": options.interval,
        "timeout": options.timeout,
    }
    if options.profile is not None:
        entry["profile"] = options.profile
    if options.health_path is not None:
        entry["health_path"] = options.health_path
    if options.version_path is not None:
        entry["version_path"] = None if options.version_path == "none" else options.version_path
    if options.body is not None:
        if options.body == "any":
            entry["body"] = None
        else:
            field_name, sep, equals = options.body.partition("=")
            if not sep or not field_name:
                raise ValueError(f"--body is FIELD=VALUE or any, got {options.body!r}")
            entry["body"] = {"json_field": field_name, "equals": _scalar(equals)}
    if options.headers:
        entry["headers"] = dict(split_header(h) for h in options.headers)
    if options.version_headers:
        entry["version_headers"] = dict(split_header(h) for h in options.version_headers)
    return entry


def probe_config(
    region: str, mqtt: dict[str, str], listen: str, target: dict[str, Any]
) -> dict[str, Any]:
    """The config of the demo's probe for `region`, watching one target."""
    return {
        "region": region,
        "probe_id": f"{region}-1",
        "mqtt": mqtt,
        "listen": listen,
        "targets": [target],
    }


def check_options(url: str | None, options: TargetOptions) -> str | None:
    """Why the probes would refuse the config these options make; None when they would not.

    Checked before anything starts, so a typo is one line and exit 2, not three probes
    that die while the rest of the demo runs on.
    """
    try:
        entry = target_config(url or "http://127.0.0.1:8000", options)
        config = probe_config(REGIONS[0], {"url": "mqtt://127.0.0.1:1883"}, "127.0.0.1:0", entry)
        # The probes expand ${VAR} from the environment the demo gives them: this one.
        parse_probe_config(yaml.safe_dump(config), source="vigil demo", env=dict(os.environ))
    except (ValueError, ConfigError) as exc:
        return str(exc)
    return None


class StopRequested(BaseException):
    """A stop signal arrived while the demo was starting (a BaseException, as Ctrl-C is)."""


class _Stopper:
    """Turns SIGINT, SIGTERM and SIGHUP into one orderly stop, whenever they arrive.

    Installed once for the whole run and never swapped: asyncio's own signal handlers are
    reset to the default when its loop closes, and a SIGTERM then would kill the demo with
    its children half stopped.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        # Set while the watchers run: ends their event loop instead of raising into it.
        self.wake: Callable[[], None] | None = None
        self.stopping = False

    def install(self) -> dict[int, Any]:
        """Handle STOP_SIGNALS from now on; returns the handlers they had."""
        return {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping or self.received is not None:
            return  # already stopping, in order and bounded: another signal changes nothing
        self.received = signum
        if self.wake is not None:
            self.wake()
        else:
            raise StopRequested(signum)


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
            if not payload:
                return None  # a deleted record
            record = StateRecord.from_json(payload)
            if record.forgotten_at is not None:
                verdicts.pop(record.target, None)
                return f"{'':8} >>> {record.target} is forgotten (nobody reports it)"
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
    return json.loads(loopback_get(url, timeout=5)[1])


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


async def _watch(broker_port: int, api: str, stop: asyncio.Event) -> None:
    watchers = [
        asyncio.create_task(_watch_mqtt(broker_port)),
        asyncio.create_task(_watch_alerts(api)),
    ]
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopping, *watchers], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [stopping, *watchers]:
            task.cancel()
        await asyncio.gather(stopping, *watchers, return_exceptions=True)


def _alertmanager(children: Children, work: Path, taken: set[int]) -> str | None:
    binary = alertmanager_binary()
    if binary is None:
        return None
    port = port_or_free(9093, taken)
    taken.add(port)
    config = work / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config()))
    proc = children.start(
        alertmanager_args(binary, config, work / "alertmanager", port),
        "alertmanager",
        "alertmanager",
    )
    wait_port(port, alive=lambda: proc.poll() is None)
    return f"http://127.0.0.1:{port}"


def _embedded_available() -> bool:
    try:
        import amqtt  # noqa: F401
    except ImportError:
        return False
    return True


def run(
    port: int, target: str | None, broker: str = "auto", options: TargetOptions | None = None
) -> int:
    """Start everything, watch until a stop signal, stop everything; returns the exit code.

    0 after SIGINT, SIGTERM or SIGHUP alike (not 128 + the signal): a stop that was asked for
    and done is a success, which is what `timeout`, systemd and container runtimes expect.

    `broker`: `mosquitto`, `embedded` (amqtt, in its own process) or `auto` (mosquitto when
    installed, else embedded). `options`: the watched target's name, profile, timing, paths,
    body check and headers (a config error exits 2 before anything starts).
    """
    options = options or TargetOptions()
    problem = check_options(target, options)
    if problem is not None:
        print(f"vigil demo: {problem}", file=sys.stderr)
        return 2
    busy = bind_error(port)
    if busy is not None:
        reason = "is in use" if busy.errno == errno.EADDRINUSE else f"cannot be bound ({busy})"
        print(f"vigil demo: 127.0.0.1:{port} {reason}; choose another --port", file=sys.stderr)
        return 2
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
    # Ports promised to a service that has not bound them yet: no other service gets one.
    taken = {port}
    work = Path(tempfile.mkdtemp(prefix="vigil-demo-"))
    children = Children(work)
    py = sys.executable
    stopper = _Stopper()
    previous = stopper.install()
    code = 0
    try:
        broker_port = port_or_free(1883, taken)
        taken.add(broker_port)
        if broker == "mosquitto" and mosquitto is not None:
            (work / "mosquitto.conf").write_text(mosquitto_conf(broker_port, work))
            broker_proc = children.start(
                [mosquitto, "-c", str(work / "mosquitto.conf")], "mosquitto", "broker"
            )
        else:
            broker_proc = children.start(
                [py, "-m", "demo.broker", "--port", str(broker_port)], "broker", "broker"
            )
        wait_port(broker_port, alive=lambda: broker_proc.poll() is None)
        own_target = target is None
        if target is None:
            demo_port = port_or_free(8000, taken)
            taken.add(demo_port)
            target_proc = children.start(
                [py, "-m", "demo.target", "--port", str(demo_port)], "demo-target", "target"
            )
            wait_port(demo_port, alive=lambda: target_proc.poll() is None)
            target = f"http://127.0.0.1:{demo_port}"
        watched = "the demo target" if own_target else target
        am = _alertmanager(children, work, taken)
        mqtt = {"url": f"mqtt://127.0.0.1:{broker_port}", "protocol": protocol}
        agg_config: dict[str, Any] = {
            "mqtt": mqtt,
            "listen": f"127.0.0.1:{port}",
            "regions": list(REGIONS),
            "client_id": "vigil-demo-aggregator",
            "startup_grace": "2s",
            # Uptime, incidents and charts for the demo's life (the work dir goes with it).
            "storage": {"path": str(work / "history.sqlite")},
        }
        if am is not None:
            agg_config["alertmanager"] = {"urls": [am], "resend_interval": "30s"}
        (work / "aggregator.yaml").write_text(yaml.safe_dump(agg_config))
        aggregator = children.start(
            [py, "-m", "aggregator", "--config", str(work / "aggregator.yaml")],
            "aggregator",
            "aggregator",
        )
        for i, region in enumerate(REGIONS):
            config = work / f"probe-{region}.yaml"
            probe_port = port_or_free(9101 + i, taken)
            taken.add(probe_port)
            listen = f"127.0.0.1:{probe_port}"
            config.write_text(
                yaml.safe_dump(probe_config(region, mqtt, listen, target_config(target, options)))
            )
            children.start([py, "-m", "probe", "--config", str(config)], f"probe-{region}", "probe")
        page = f"http://127.0.0.1:{port}"
        wait_http(f"{page}/healthz", alive=lambda: aggregator.poll() is None)
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
        stop = asyncio.Event()
        with asyncio.Runner() as runner:
            loop = runner.get_loop()

            def wake() -> None:
                loop.call_soon_threadsafe(stop.set)

            # Switched while no loop runs: raised inside one, StopRequested could end up
            # in the loop's exception handler, and the signal would be lost.
            stopper.wake = wake
            try:
                runner.run(_watch(broker_port, page, stop))
            finally:
                stopper.wake = None
    except StopRequested:
        pass  # a signal during start-up: stop what has started
    except (ChildExited, TimeoutError) as exc:
        # A part that exited or never answered: say which, and where its log is.
        print(f"vigil demo: could not start ({exc}); the logs are in {work}", file=sys.stderr)
        code = 1
    finally:
        stopper.stopping = True
        if stopper.received is not None:
            name = signal.Signals(stopper.received).name
            print(f"vigil demo: {name}, stopping everything in order.", flush=True)
        children.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("vigil demo: stopped.", flush=True)
    return code
