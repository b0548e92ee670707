"""`vigil`: operator commands (`vigil status`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli import demo, status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil's operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser(
        "status",
        help="show every target's verdict per region",
        description="Exit code: 0 all up, 1 any degraded or unknown, 2 any down, "
        "3 the aggregator cannot be reached. Token from VIGIL_TOKEN.",
    )
    st.add_argument(
        "--url",
        default=os.environ.get("VIGIL_URL", "http://127.0.0.1:8080"),
        help="the aggregator's base URL (default: $VIGIL_URL or http://127.0.0.1:8080)",
    )
    st.add_argument("--target", help="only this target")
    st.add_argument("--json", action="store_true", help="print the API's raw JSON")
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
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.run(args.port, args.target, args.broker)
    if args.command == "status":
        return status.run(
            args.url, args.target, args.json, os.environ.get("VIGIL_TOKEN"), sys.stdout
        )
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(main())
