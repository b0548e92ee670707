"""The aggregator's only MQTT code: a persistent-session subscriber and the state publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.config import MqttSettings
from runtime.retry import reconnecting
from wire.topics import PRESENCE_FILTER, RESULTS_FILTER, STATE_FILTER

log = logging.getLogger("vigil.aggregator.mqtt")

OnMessage = Callable[[str, bytes, bool], None]


def _refused(code: object) -> bool:
    # MQTT 3.1.1 grants 0-2 or 0x80; MQTT 5 gives reason codes, failures from 0x80 up.
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


class Subscriber:
    """Keeps a persistent session, hands every message to `on_message`, publishes state."""

    def __init__(
        self,
        settings: MqttSettings,
        on_message: OnMessage,
        *,
        client_id: str,
        session_expiry: float,
        subscribe_timeout: float = 60.0,
        on_connected: Callable[[bool], None] = lambda _c: None,
    ) -> None:
        self._settings = settings
        self._on_message = on_message
        self._client_id = client_id
        self._session_expiry = session_expiry
        # aiomqtt's default of 10 s can expire while a backlog is flowing perfectly well.
        self._subscribe_timeout = subscribe_timeout
        self._on_connected = on_connected
        self._client: aiomqtt.Client | None = None
        self.subscribed = asyncio.Event()
        # Latest state record per topic: only the newest matters, so they coalesce.
        self._outbox: dict[str, bytes] = {}
        self._outbox_ready = asyncio.Event()

    def _make_client(self) -> aiomqtt.Client:
        s = self._settings
        v311 = s.protocol == "3.1.1"
        properties = None
        if not v311:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
            properties.SessionExpiryInterval = int(min(self._session_expiry, 2**32 - 1))
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.resolved_password(),
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V311 if v311 else aiomqtt.ProtocolVersion.V5,
            # A persistent session: the broker queues results while the aggregator is away.
            clean_session=False if v311 else None,
            # paho refuses a clean-start flag on MQTT 3.1.1, where clean_session says it.
            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY if v311 else False,
            properties=properties,
            keepalive=s.keepalive,
            tls_context=s.ssl_context(),
            tls_insecure=s.tls_insecure if s.tls else None,
            timeout=10,
        )

    async def run(self) -> None:
        """Connect, subscribe and consume forever; reconnect with backoff on any loss."""
        while True:
            retrying = reconnecting(self._settings.url, self._settings.reconnect_max, log)
            async with contextlib.AsyncExitStack() as stack:
                async for attempt in retrying:
                    with attempt:
                        client = await stack.enter_async_context(self._make_client())
                self._client = client
                self._on_connected(True)
                log.info("mqtt_connected", extra={"broker": self._settings.url})
                tasks = [
                    asyncio.create_task(self._consume(client)),
                    asyncio.create_task(self._subscribe(client)),
                    asyncio.create_task(self._publish_states(client)),
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
                    self._client = None
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
        for topic in (STATE_FILTER, RESULTS_FILTER, PRESENCE_FILTER):
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

    def publish_state(self, topic: str, payload: bytes) -> None:
        """Queue a retained state record; only the newest per topic is sent."""
        self._outbox[topic] = payload
        self._outbox_ready.set()

    async def _publish_states(self, client: aiomqtt.Client) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                topic, payload = next(iter(self._outbox.items()))
                await client.publish(topic, payload, qos=1, retain=True, timeout=math.inf)
                if self._outbox.get(topic) is payload:
                    del self._outbox[topic]
