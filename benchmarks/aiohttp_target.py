"""A stand-in for a real Python service's health endpoint: a tiny aiohttp application.

`benchmarks/target.py` costs next to nothing per request, which measures the prober alone.
A real target on the same machine costs more and competes for the same cores: this one
answers `GET /api/health/ping` with `{"status":"ok"}` through aiohttp's full server stack,
as a Python service would, so the lateness benchmark can be run beside it.
"""

from __future__ import annotations

import argparse
import contextlib

from aiohttp import web


async def ping(_request: web.Request) -> web.Response:
    """The healthy answer the probe's default body assertion expects."""
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    """The application: one route."""
    app = web.Application()
    app.router.add_get("/api/health/ping", ping)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=loop_factory() if loop_factory is not None else None,
    )


if __name__ == "__main__":
    main()
