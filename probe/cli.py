"""`vigil-probe`: the regional probe agent's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from probe.app import run_agent, run_once
from probe.config import load_config
from runtime.config import ConfigError
from runtime.logs import configure_logging
from runtime.service import run_until_signalled, service_arguments, use_uvloop

EXIT_CONFIG = 2

log = logging.getLogger("vigil.probe")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-probe",
        description="Check targets' health and version endpoints and publish results over MQTT.",
    )
    service_arguments(parser, "probe")
    parser.add_argument("--region", help="override the config's region")
    parser.add_argument(
        "--once",
        action="store_true",
        help="check every target once, print JSON lines, publish when a broker is configured",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config, os.environ, args.region)
    except ConfigError as exc:
        print(f"vigil-probe: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: ok ({len(config.targets)} targets, region {config.region})")
        return 0
    try:
        if args.once:
            use_uvloop()
            return asyncio.run(run_once(config, sys.stdout))
        return run_until_signalled(lambda stop: run_agent(config, stop))
    except ConfigError as exc:  # a secret file that became unreadable after the check
        print(f"vigil-probe: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        # e.g. the listen port is taken, or a CA file cannot be read.
        log.error("probe_failed", extra={"error": str(exc)})
        return 1
