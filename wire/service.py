"""Running a service process: the event loop (uvloop when installed) and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable


def use_uvloop() -> None:
    """Run on uvloop when it is installed: the same code, a faster loop."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_until_signalled(serve: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run `serve(stop)` with `stop` set on SIGTERM or SIGINT; returns its exit code."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(stop)

    use_uvloop()
    return asyncio.run(main())
