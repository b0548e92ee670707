"""`vigil-aggregator`: the aggregator's command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aggregator.app import run_aggregator
from aggregator.config import load_config
from wire.config import ConfigError
from wire.logs import configure_logging
from wire.service import run_until_signalled

EXIT_CONFIG = 2

log = logging.getLogger("vigil.aggregator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-aggregator",
        description="Judge probe results from every region and expose verdicts.",
    )
    default = os.environ.get("VIGIL_CONFIG")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        help="aggregator YAML config file (default: $VIGIL_CONFIG)",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config and exit (0 or 2)"
    )
    parser.add_argument("--log-level", default=os.environ.get("VIGIL_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"vigil-aggregator: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: ok ({len(config.regions)} regions)")
        return 0
    try:
        return run_until_signalled(lambda stop: run_aggregator(config, stop))
    except ConfigError as exc:
        print(f"vigil-aggregator: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        log.error("aggregator_failed", extra={"error": str(exc)})
        return 1
