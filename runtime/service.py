"""Running a service process: options, event loop, signals, and dying loudly on a bug."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from runtime.errors import ConfigError
from runtime.logs import configure_logging

EXIT_CONFIG = 2

log = logging.getLogger("vigil.service")

C = TypeVar("C")


def use_uvloop() -> None:
    """Run on uvloop when it is installed: the same code, a faster loop."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_until_signalled(
    serve: Callable[[asyncio.Event], Awaitable[int]], *, fast_loop: bool = True
) -> int:
    """Run `serve(stop)` with `stop` set on SIGTERM or SIGINT; returns its exit code.

    SIGHUP is logged and otherwise ignored. By the convention systemd's `ExecReload`,
    mosquitto and Alertmanager follow, it asks for a reload, which Vigil does not do; to
    stop instead would take a monitor down on an operator's attempt to reload it (for good
    under `Restart=on-failure`, as the exit is clean). Restart to apply a new config.

    `fast_loop`: on uvloop when it is installed, else on asyncio's own loop.
    """

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _sighup_ignored)
        return await serve(stop)

    if fast_loop:
        use_uvloop()
    return asyncio.run(main())


def _sighup_ignored() -> None:
    log.warning("sighup_ignored", extra={"reason": "reload is not supported; restart to apply"})


async def finish_within(seconds: float, step: Awaitable[object], what: str) -> bool:
    """Await one step of a shutdown for at most `seconds`; past that, log it and move on.

    A stop must end in bounded time whatever a broker or an HTTP client does: a supervisor
    kills what outlasts its own timeout, and a slow client would otherwise hold aiohttp's
    cleanup for up to a minute. Returns whether the step finished.
    """
    # At least one pass, so a step with no time left can still finish if it can at once.
    limit = max(0.1, seconds)
    try:
        async with asyncio.timeout(limit):
            await step
    except TimeoutError:
        log.warning("shutdown_step_overdue", extra={"step": what, "after_s": round(limit, 3)})
        return False
    return True


async def until_stopped_or_crashed(
    stop: asyncio.Event, tasks: Sequence[asyncio.Task[Any]], log: logging.Logger
) -> int:
    """Wait for `stop`, or for one of a service's forever-tasks to end, which is a bug.

    A task that dies must take the process down (exit 1, so a supervisor restarts it) rather
    than leave it running half-alive: an aggregator without its subscriber still answers
    /healthz but judges nothing. Returns the exit code.
    """
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    crashed = [t for t in done if t is not stopping]
    for task in crashed:
        error = task.exception() if not task.cancelled() else None
        log.error(
            "task_crashed",
            extra={"task": task.get_name(), "error": repr(error)},
            exc_info=error,
        )
    return 1 if crashed else 0


def service_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The options both services take: --config (or $VIGIL_CONFIG), --check-config, --log-level."""
    default = os.environ.get("VIGIL_CONFIG")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(default) if default else None,
        required=default is None,
        help=f"{what} YAML config file (default: $VIGIL_CONFIG)",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config and exit (0 or 2)"
    )
    parser.add_argument("--log-level", default=os.environ.get("VIGIL_LOG_LEVEL", "INFO"))


def service_main(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    load: Callable[[argparse.Namespace], C],
    describe: Callable[[C], str],
    run: Callable[[argparse.Namespace, C], int],
    log: logging.Logger,
) -> int:
    """The command line both services share; returns the exit code.

    Parses `argv` with `parser` (which has `service_arguments`), sets up logging, loads the
    config with `load`, and either prints `describe(config)` for `--check-config` or calls
    `run`. A config error, at load or when a file it names is read at start, is exit 2 with
    the file and key on stderr; an OS error at start (a port taken) is exit 1.
    """
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load(args)
        if args.check_config:
            print(f"{args.config}: ok ({describe(config)})")
            return 0
        return run(args, config)
    except ConfigError as exc:
        print(f"{parser.prog}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        log.error("start_failed", extra={"error": str(exc)})
        return 1
