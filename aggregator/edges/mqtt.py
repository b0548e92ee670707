"""The aggregator's only MQTT code: a persistent-session subscriber and the state publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

import aiomqtt

from runtime.config import MqttSettings
from runtime.mqtt import Connector, make_client
from wire.topics import aggregator_filters

log = logging.getLogger("vigil.aggregator.edges.mqtt")

OnMessage = Callable[[str, bytes, bool], None]


def _refused(code: object) -> bool:
    # MQTT 3.1.1 grants 0-2 or 0x80; MQTT 5 gives reason codes, failures from 0x80 up.
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


class StateOutbox:
    """Retained state records waiting for the broker; only the newest per topic is kept."""

    def __init__(self) -> None:
        self._pending: dict[str, bytes] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def latest(self, topic: str) -> bytes | None:
        """The record waiting for `topic`, if any."""
        return self._pending.get(topic)

    def put(self, topic: str, payload: bytes) -> None:
        """Queue a retained record, replacing any older one for the same topic."""
        self._pending[topic] = payload
        self._ready.set()

    async def drain(self, client: aiomqtt.Client) -> None:
        """Publish queued records forever; a record is dropped only once it is acknowledged."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                topic, payload = next(iter(self._pending.items()))
                await client.publish(topic, payload, qos=1, retain=True, timeout=math.inf)
                if self._pending.get(topic) is payload:
                    del self._pending[topic]


class Subscriber:
    """Keeps a persistent session, hands every message to `on_message`, publishes state."""

    def __init__(
        self,
        settings: MqttSettings,
        on_message: OnMessage,
        outbox: StateOutbox,
        *,
        client_id: str,
        session_expiry: float,
        subscribe_timeout: float = 60.0,
        on_connected: Callable[[bool], None] = lambda _c: None,
    ) -> None:
        self._settings = settings
        self._on_message = on_message
        self._outbox = outbox
        # aiomqtt's default of 10 s can expire while a backlog is flowing perfectly well.
        self._subscribe_timeout = subscribe_timeout
        self._on_connected = on_connected
        # Its own state records only: a peer's verdicts are not this instance's to restore.
        self._filters = aggregator_filters(client_id)
        self._connector = Connector(
            settings,
            # A persistent session: the broker queues results while the aggregator is away.
            lambda protocol: make_client(
                settings, identifier=client_id, protocol=protocol, session_expiry=session_expiry
            ),
            log,
        )
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Connect, subscribe and consume forever; reconnect with backoff on any loss."""
        while True:
            async with contextlib.AsyncExitStack() as stack:
                client = await self._connector.connect(stack)
                self._on_connected(True)
                log.info(
                    "mqtt_connected",
                    extra={"broker": self._settings.url, "protocol": self._connector.protocol.name},
                )
                tasks = [
                    asyncio.create_task(self._consume(client)),
                    asyncio.create_task(self._subscribe(client)),
                    asyncio.create_task(self._outbox.drain(client)),
                ]
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        if task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt_lost", extra={"error": str(exc)})
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    self.subscribed.clear()
                    self._on_connected(False)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            try:
                self._on_message(str(message.topic), bytes(payload), bool(message.retain))
            except Exception:  # a bug must cost one message, never the subscription
                log.exception("message_handler_crashed", extra={"topic": str(message.topic)})

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for topic in self._filters:
            while True:
                try:
                    granted = await client.subscribe(topic, qos=1, timeout=self._subscribe_timeout)
                except aiomqtt.MqttCodeError:
                    raise
                except aiomqtt.MqttError as exc:
                    # The SUBACK is stuck behind a backlog; subscribing again is harmless.
                    log.warning("mqtt_subscribe_slow", extra={"topic": topic, "error": str(exc)})
                    continue
                if any(_refused(code) for code in granted):
                    # An ACL that forbids the subscription: say so loudly, retry with backoff.
                    log.error(
                        "mqtt_subscribe_refused", extra={"topic": topic, "codes": str(granted)}
                    )
                    raise aiomqtt.MqttError(f"subscription to {topic} refused")
                break
        self.subscribed.set()
        log.info("mqtt_subscribed")
        await asyncio.Event().wait()  # keep the task alive; cancelled on disconnect
