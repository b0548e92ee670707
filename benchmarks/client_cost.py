"""CPU per fresh-connection GET: the probe's lean client, aiohttp, and a bare protocol.

Run by probe_bench.py against its raw target (or alone: `--port` of a running
`benchmarks/target.py`); prints one JSON object. All three contenders run in this process,
on the loop the probe uses (uvloop when installed), interleaved for `--rounds`; each one's
best round is kept. The bare protocol is the floor: connect, write a fixed request, read
until the announced length has arrived, close; no timing, no body decoding, no URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe.check import PhaseTimer, make_session, read_body  # noqa: E402
from probe.lean import LeanClient  # noqa: E402
from runtime.service import use_uvloop  # noqa: E402

PATH = "/api/health/ping"
HEADERS = {"X-Vigil-Region": "bench", "X-Vigil-Probe": "bench-1"}
LIMIT = 64 * 1024


class Bare(asyncio.Protocol):
    """The least a client can do for one answer on a fresh connection."""

    def __init__(self, request: bytes, done: asyncio.Future[int]) -> None:
        self.request = request
        self.done = done
        self.buffer = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length and not self.done.done():
            self.done.set_result(int(head.split(b" ", 2)[1]))
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def measure(name: str, port: int, requests: int, concurrency: int) -> float:
    """CPU microseconds per request for contender `name`."""
    loop = asyncio.get_running_loop()
    url = f"http://127.0.0.1:{port}{PATH}"
    bare_request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    ).encode()
    session = make_session(reuse_connections=False)
    lean = LeanClient()

    async def bare() -> int:
        done: asyncio.Future[int] = loop.create_future()
        await loop.create_connection(lambda: Bare(bare_request, done), "127.0.0.1", port)
        return await done

    async def lean_get() -> int:
        timer = PhaseTimer(start=time.perf_counter())
        return (await lean.get(url, HEADERS, True, timer, LIMIT)).status

    async def aiohttp_get() -> int:
        async with session.get(url, headers=HEADERS, allow_redirects=False) as resp:
            await read_body(resp, LIMIT)
            return resp.status

    one: Callable[[], Awaitable[int]] = {
        "bare": bare,
        "lean": lean_get,
        "aiohttp": aiohttp_get,
    }[name]
    slots = asyncio.Semaphore(concurrency)

    async def limited() -> int:
        async with slots, asyncio.timeout(10):
            return await one()

    try:
        await asyncio.gather(*(limited() for _ in range(min(300, requests))))  # warm up
        cpu0 = time.process_time()
        statuses = await asyncio.gather(*(limited() for _ in range(requests)))
        cpu = time.process_time() - cpu0
    finally:
        await session.close()
        await lean.close()
    if any(status != 200 for status in statuses):
        raise SystemExit(f"client_cost: {name} got a status other than 200")
    return cpu / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    use_uvloop()
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in ("bare", "lean", "aiohttp"):
            cost = asyncio.run(measure(name, args.port, args.requests, args.concurrency))
            best[name] = min(best.get(name, cost), cost)
    loop = "uvloop" if "uvloop" in type(asyncio.get_event_loop_policy()).__module__ else "asyncio"
    print(json.dumps({"loop": loop, **{f"{k}_us": v for k, v in best.items()}}))


if __name__ == "__main__":
    main()
