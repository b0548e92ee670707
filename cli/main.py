"""`vigil`: operator commands (`vigil status`, `vigil check`, `vigil demo`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli import check, demo, status


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
    dm.add_argument("--port", type=int, default=8080, help="the aggregator's HTTP port")
    dm.add_argument("--target", help="watch this real service (base URL) instead of the demo")
    dm.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="mosquitto when installed (auto), or the embedded amqtt broker",
    )
    _target_options(dm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
