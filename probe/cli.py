"""`vigil-probe`: the regional probe agent's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from probe.app import run_agent, run_once, settle_gc, tune_gc
from probe.config import ProbeConfig, load_config
from runtime.service import run_until_signalled, service_arguments, service_main, use_uvloop

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


def _run(args: argparse.Namespace, config: ProbeConfig) -> int:
    if args.once:
        use_uvloop()
        return asyncio.run(run_once(config, sys.stdout))
    tune_gc()
    return run_until_signalled(lambda stop: run_agent(config, stop, on_warm=settle_gc))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    return service_main(
        _parser(),
        argv,
        load=lambda args: load_config(args.config, os.environ, args.region),
        describe=lambda config: f"{len(config.targets)} targets, region {config.region}",
        run=_run,
        log=log,
    )
