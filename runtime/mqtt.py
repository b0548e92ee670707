"""Building and connecting MQTT clients: one meaning of `protocol: auto` for both services.

`auto` tries MQTT 5 first. A broker that refuses the version (CONNACK 1 or 132) gets 3.1.1
at once; until the first connection succeeds, every failed attempt alternates the version,
since some 3.1.1-only brokers (amqtt) never answer an MQTT 5 CONNECT at all. Once connected,
the client keeps to the version that worked.

A session that ends within `STABLE_SECONDS` of its connect (a refused subscription, a
publish the broker rejects) counts as a failed attempt: the next connect backs off like a
refused one, so such a failure cannot turn into a reconnect storm.

A persistent session (the aggregator's) is `clean_session=0` on 3.1.1 and `clean_start=0`
with a session expiry on 5; a probe's session is clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.config import MqttSettings
from runtime.retry import backoff_delay, reconnecting

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311

# A connection that lasts less than this did not work, whatever the CONNACK said.
STABLE_SECONDS = 5.0


def refused_for_protocol(exc: BaseException) -> bool:
    """Whether a failed connect means "this broker does not speak that protocol version"."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    # 1: v3.1.1 "unacceptable protocol version"; 132: v5 "Unsupported Protocol Version".
    return value in (1, 132)


def make_client(
    settings: MqttSettings,
    *,
    identifier: str,
    protocol: aiomqtt.ProtocolVersion,
    session_expiry: float | None = None,
    will: aiomqtt.Will | None = None,
    max_inflight: int | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client for `settings`; `session_expiry` set means a persistent session."""
    v311 = protocol == V311
    persistent = session_expiry is not None
    properties = None
    if not v311:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
        # A 100 MiB publish must not be read whole by a client that wants at most 64 KiB.
        properties.MaximumPacketSize = settings.max_packet_size
        if persistent:
            properties.SessionExpiryInterval = int(min(session_expiry or 0, 2**32 - 1))
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.resolved_password(),
        identifier=identifier,
        protocol=protocol,
        clean_session=(not persistent) if v311 else None,
        # paho refuses a clean-start flag on MQTT 3.1.1, where clean_session says it.
        clean_start=False if persistent and not v311 else paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        will=will,
        keepalive=settings.keepalive,
        tls_context=settings.ssl_context(),
        tls_insecure=settings.tls_insecure if settings.tls else None,
        timeout=10,
        max_inflight_messages=max_inflight,
    )


class Connector:
    """Connects with backoff forever, falling back from MQTT 5 to 3.1.1 under `auto`."""

    def __init__(
        self,
        settings: MqttSettings,
        build: Callable[[aiomqtt.ProtocolVersion], aiomqtt.Client],
        log: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._build = build
        self._log = log
        self._clock = clock
        self._sleep = sleep
        self._connected_at: float | None = None
        # Sessions in a row that ended within STABLE_SECONDS.
        self._unstable = 0
        self.protocol = V311 if settings.protocol == "3.1.1" else V5
        # Whether the version is known: fixed by config, or proven by a connection.
        self._settled = settings.protocol != "auto"

    async def connect(self, stack: contextlib.AsyncExitStack) -> aiomqtt.Client:
        """A connected client, entered into `stack`; retries until it succeeds.

        Called again once the previous client's connection is gone; if that one lasted less
        than `STABLE_SECONDS`, waits with backoff first.
        """
        await self._after_session()
        retrying = reconnecting(self._settings.url, self._settings.reconnect_max, self._log)
        async for attempt in retrying:
            with attempt:
                try:
                    client = await stack.enter_async_context(self._build(self.protocol))
                except aiomqtt.MqttError as exc:
                    self._after_failure(exc)
                    raise
                self._settled = True
                self._connected_at = self._clock()
                return client
        raise AssertionError("unreachable: the retry loop never stops")  # pragma: no cover

    async def _after_session(self) -> None:
        if self._connected_at is None:
            return
        lasted = self._clock() - self._connected_at
        self._connected_at = None
        self._unstable = 0 if lasted >= STABLE_SECONDS else self._unstable + 1
        if not self._unstable:
            return
        delay = backoff_delay(self._unstable, 0.2, self._settings.reconnect_max, 0.5)
        self._log.warning(
            "mqtt_session_short",
            extra={
                "lasted_s": round(lasted, 3),
                "in_a_row": self._unstable,
                "retry_in_s": round(delay, 2),
            },
        )
        await self._sleep(delay)

    def _after_failure(self, exc: aiomqtt.MqttError) -> None:
        if self._settings.protocol != "auto":
            return
        if refused_for_protocol(exc) and self.protocol == V5:
            switch_to = V311
        elif not self._settled:
            switch_to = V311 if self.protocol == V5 else V5
        else:
            return
        self._log.info(
            "mqtt_protocol_fallback", extra={"protocol": switch_to.name, "error": str(exc)}
        )
        self.protocol = switch_to
