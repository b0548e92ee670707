"""The HTTP plumbing both services share: `/healthz`, `/metrics`, and starting the server."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from runtime.config import parse_listen


async def healthz(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


def add_machine_routes(app: web.Application, registry: CollectorRegistry) -> None:
    """`/healthz` and `/metrics` (prometheus_client's own aiohttp handler) on `app`."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))


async def serve(app: web.Application, listen: str) -> tuple[web.AppRunner, str, int]:
    """Start `app` on `listen` ("host:port"; port 0 picks one).

    Returns:
        The runner (call `cleanup()` to stop), the host and the bound port.

    Raises:
        OSError: the address cannot be bound.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = parse_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, host, bound
