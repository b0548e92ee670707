"""`vigil-aggregator`: the aggregator's command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aggregator.app import run_aggregator
from aggregator.config import load_config
from runtime.config import ConfigError
from runtime.logs import configure_logging
from runtime.service import run_until_signalled, service_arguments

EXIT_CONFIG = 2

log = logging.getLogger("vigil.aggregator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-aggregator",
        description="Judge probe results from every region and expose verdicts.",
    )
    service_arguments(parser, "aggregator")
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
