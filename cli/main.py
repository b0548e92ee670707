"""`vigil`: operator commands (`status`, `check`, `demo`, `announce`, `note`, `maintenance`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli import check, demo, history, status


def build_parser() -> argparse.ArgumentParser:
    """The `vigil` command line."""
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil's operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser(
        "status",
        help="show the targets with problems (or --all) per region, and a summary",
        description="Lists down, degraded and unknown targets, problems first, then how many "
        "have each verdict. Exit code (over every target, listed or not): 0 all up, 1 any "
        "degraded or unknown, 2 any down, 3 the aggregator cannot be reached. Token from "
        "VIGIL_TOKEN.",
    )
    st.add_argument(
        "--url",
        default=os.environ.get("VIGIL_URL", "http://127.0.0.1:8080"),
        help="the aggregator's base URL (default: $VIGIL_URL or http://127.0.0.1:8080)",
    )
    st.add_argument("--target", help="only this target")
    st.add_argument("--json", action="store_true", help="print the API's raw JSON")
    st.add_argument(
        "--all",
        action="store_true",
        dest="show_all",
        help="list every target, not only the problems (down, degraded, unknown)",
    )
    ck = sub.add_parser(
        "check",
        help="try a service's known health endpoints and print its probe.yaml entry",
        description="Asks every profile's health endpoints as the probe does and prints what "
        "each answered, the profile that fits, the version and a probe.yaml entry. Exit code: "
        "0 a profile fits and the service is healthy, 1 reachable but unhealthy or no profile "
        "fits, 3 unreachable.",
    )
    ck.add_argument("url", help="the service's base URL, e.g. http://127.0.0.1:20128")
    ck.add_argument("--name", help="the target's name in the entry (default: from the host)")
    ck.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="sent with every request; repeatable",
    )
    ck.add_argument("--timeout", default="5s", help="of each request (default: 5s)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    dm = sub.add_parser(
        "demo",
        help="run broker, probes, aggregator and a demo target on this machine",
        description="Everything on 127.0.0.1 until Ctrl-C or SIGTERM: Debian's mosquitto when "
        "installed, else an embedded broker (pip install 'vigil[demo]').",
    )
    dm.add_argument("--port", type=_tcp_port, default=8080, help="the aggregator's HTTP port")
    dm.add_argument("--target", help="watch this real service (base URL) instead of the demo")
    dm.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="mosquitto when installed (auto), or the embedded amqtt broker",
    )
    _target_options(dm)
    _operator_parsers(sub)
    return parser


def _tcp_port(text: str) -> int:
    """A TCP port a server can listen on: 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills an optional positional before the options that precede its value: in
    # `maintenance checkout --for 30m "reason"` the reason is left over.
    leftover = extra[0] if len(extra) == 1 else "-"
    if args.command == "maintenance" and args.reason is None and not leftover.startswith("-"):
        args.reason = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("announce", "note", "maintenance"):
        return _run_operator(parser, args)
    if args.command == "demo":
        return demo.run(args.port, args.target, args.broker, demo_options(args))
    if args.command == "check":
        return check.run(
            args.url, args.name, args.header, args.timeout, args.json, sys.stdout, sys.stderr
        )
    if args.command == "status":
        return status.run(
            args.url,
            args.target,
            args.json,
            os.environ.get("VIGIL_TOKEN"),
            sys.stdout,
            show_all=args.show_all,
        )
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits


def _aggregator_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("VIGIL_URL", "http://127.0.0.1:8080"),
        help="the aggregator's base URL (default: $VIGIL_URL or http://127.0.0.1:8080)",
    )
    p.add_argument("--json", action="store_true", help="print the API's raw JSON answer")


def _window(text: str) -> float:
    try:
        return history.parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _operator_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`announce`, `note` and `maintenance`: operators writing to the aggregator."""
    an = sub.add_parser(
        "announce",
        help="set (or --clear) the announcement shown on the status page",
        description="Exit code: 0 done, 1 the aggregator refused, 3 it cannot be reached. "
        "Token from VIGIL_TOKEN.",
    )
    said = an.add_mutually_exclusive_group(required=True)
    said.add_argument("text", nargs="?", help="the announcement")
    said.add_argument("--clear", action="store_true", help="remove the announcement")
    _aggregator_options(an)
    nt = sub.add_parser(
        "note",
        help="add a note to an incident",
        description="Exit code: 0 saved, 1 the aggregator refused (e.g. no such incident), "
        "3 it cannot be reached. Token from VIGIL_TOKEN.",
    )
    nt.add_argument("incident_id", type=int, metavar="INCIDENT_ID", help="the incident's id")
    nt.add_argument("text", help="the note")
    _aggregator_options(nt)
    mt = sub.add_parser(
        "maintenance",
        help="open a maintenance window: a target's alerts silenced for a while (or --list)",
        description="Records a window on TARGET and silences the target's alerts on every "
        "Alertmanager. Exit code: 0 done, 1 the aggregator refused, or the window is recorded "
        "but not every Alertmanager silenced it, 3 the aggregator cannot be reached. Token "
        "from VIGIL_TOKEN.",
    )
    what = mt.add_mutually_exclusive_group(required=True)
    what.add_argument("target", nargs="?", metavar="TARGET", help="the target's name")
    what.add_argument(
        "--list", action="store_true", dest="list_windows", help="list the maintenance windows"
    )
    what.add_argument(
        "--end",
        type=int,
        metavar="WINDOW_ID",
        help="end a window now: its silences expired on every Alertmanager",
    )
    mt.add_argument("reason", nargs="?", help="why, kept with the window and its silences")
    mt.add_argument(
        "--for",
        dest="duration",
        type=_window,
        metavar="DURATION",
        help="how long: 90s, 30m, 2h or 1d (at most 7 days)",
    )
    _aggregator_options(mt)


def _run_operator(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    token = os.environ.get("VIGIL_TOKEN")
    if args.command == "announce":
        return history.announce(
            args.url, args.text, args.clear, args.json, token, sys.stdout, sys.stderr
        )
    if args.command == "note":
        return history.note(
            args.url, args.incident_id, args.text, args.json, token, sys.stdout, sys.stderr
        )
    if args.end is not None:
        if args.duration is not None or args.reason is not None:
            parser.error("maintenance --end takes no --for or reason")
        return history.maintenance_end(args.url, args.end, args.json, token, sys.stdout, sys.stderr)
    if args.list_windows:
        if args.duration is not None or args.reason is not None:
            parser.error("maintenance --list takes no --for or reason")
        return history.maintenance_list(args.url, args.json, token, sys.stdout, sys.stderr)
    if args.duration is None or not args.reason:
        parser.error("maintenance TARGET needs --for DURATION and a reason")
    return history.maintenance(
        args.url,
        args.target,
        args.duration,
        args.reason,
        args.json,
        token,
        sys.stdout,
        sys.stderr,
    )


def _target_options(dm: argparse.ArgumentParser) -> None:
    """The watched target's keys, named as in the probe config (see the README's table)."""
    opts = dm.add_argument_group("the watched target (as in probe.yaml; unset keys: the profile's)")
    opts.add_argument("--name", default="demo", help="the target's name (default: demo)")
    opts.add_argument(
        "--profile",
        help="a service profile: generic (the default) or omniroute (both of its generations)",
    )
    opts.add_argument("--interval", default="5s", help="between checks (default: 5s)")
    opts.add_argument("--timeout", default="2s", help="of each check (default: 2s)")
    opts.add_argument("--health-path", help="e.g. /healthz (default: the profile's)")
    opts.add_argument("--version-path", help="e.g. /version, or none to skip the version check")
    opts.add_argument(
        "--body", help="FIELD=VALUE: the health body's JSON field must equal VALUE; any: no check"
    )
    opts.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="sent with every check; repeatable; ${VAR} is expanded from the environment",
    )
    opts.add_argument(
        "--version-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="sent to the version endpoint only (e.g. a Cookie); repeatable",
    )


def demo_options(args: argparse.Namespace) -> demo.TargetOptions:
    """The demo's target options from its parsed command line."""
    return demo.TargetOptions(
        name=args.name,
        profile=args.profile,
        interval=args.interval,
        timeout=args.timeout,
        health_path=args.health_path,
        version_path=args.version_path,
        body=args.body,
        headers=tuple(args.header),
        version_headers=tuple(args.version_header),
    )


if __name__ == "__main__":
    sys.exit(main())
