"""Publishing results and presence to the broker: the probe's only MQTT code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import aiomqtt

from probe.buffer import ResultBuffer
from runtime.config import MqttSettings
from runtime.mqtt import Connector, make_client
from wire.result import Presence
from wire.topics import presence_topic, result_topic

log = logging.getLogger("vigil.probe.mqtt")

# Results in flight at the broker at once (paho's max_inflight). aiomqtt hands each publish
# to paho synchronously and in call order, so order on the wire is kept.
PUBLISH_WINDOW = 100
# Results taken from the buffer per round. A round takes a few turns of the event loop, and
# a loop busy with checks makes each turn long: at 100 a round the publisher fell behind
# whatever the probe could check and results stopped reaching the broker (at 2,000 checks/s
# offered, about 100 a second arrived). Beyond the window paho queues them, in order, and
# sends each as an acknowledgement frees a slot, without waiting for another turn.
PUBLISH_BATCH = 1000


class Publisher:
    """Keeps a connection to the broker and drains the result buffer through it, in order."""

    def __init__(
        self,
        settings: MqttSettings,
        buffer: ResultBuffer,
        *,
        region: str,
        probe_id: str,
        boot_id: str,
        targets: Mapping[str, float],
        on_published: Callable[[int], None] = lambda _n: None,
        on_connected: Callable[[bool], None] = lambda _c: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._buffer = buffer
        self._region = region
        self._probe_id = probe_id
        self._boot_id = boot_id
        self._targets = dict(targets)
        self._on_published = on_published
        self._on_connected = on_connected
        self._wall = wall_clock
        self._connector = Connector(settings, self._client_for, log)
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    @property
    def _presence_topic(self) -> str:
        return presence_topic(self._region, self._probe_id)

    def _presence(self, status: str) -> bytes:
        return Presence(
            status="online" if status == "online" else "offline",
            probe_id=self._probe_id,
            region=self._region,
            boot_id=self._boot_id,
            at=self._wall(),
            targets=self._targets if status == "online" else {},
        ).to_json()

    def _client_for(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        # The probe keeps its own buffer of unacknowledged results, so it needs no session
        # state at the broker: a clean session.
        return make_client(
            self._settings,
            identifier=self._settings.client_id or f"vigil-probe-{self._region}-{self._probe_id}",
            protocol=protocol,
            will=aiomqtt.Will(self._presence_topic, self._presence("offline"), qos=1, retain=True),
            max_inflight=PUBLISH_WINDOW,
        )

    async def run(self) -> None:
        """Connect, publish presence, drain the buffer; reconnect forever on any loss."""
        while True:
            async with contextlib.AsyncExitStack() as stack:
                client = await self._connector.connect(stack)
                self._client = client
                self.connected.set()
                self._on_connected(True)
                # What the broker acknowledged lately may have died with it (mosquitto saves to
                # disk every autosave_interval): send it again; the aggregator drops duplicates.
                replayed = self._buffer.rewind()
                log.info(
                    "mqtt_connected", extra={"broker": self._settings.url, "replayed": replayed}
                )
                try:
                    await client.publish(
                        self._presence_topic, self._presence("online"), qos=1, retain=True
                    )
                    await self._drain(client)
                except aiomqtt.MqttError as exc:
                    log.warning("mqtt_lost", extra={"error": str(exc)})
                finally:
                    self._client = None
                    self.connected.clear()
                    self._on_connected(False)

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            await self._buffer.wait_not_empty()
            batch = self._buffer.peek(PUBLISH_BATCH)
            # Queue every publish before awaiting any, so paho pipelines them in order.
            # A replay is not retained: a connection lost mid-replay must not leave an old
            # result as a target's retained value (the newest stays, or comes next).
            pending = [
                asyncio.ensure_future(
                    client.publish(
                        result_topic(r.region, r.target),
                        r.to_json(),
                        qos=1,
                        retain=not self._buffer.is_replay(item_id),
                    )
                )
                for item_id, r in batch
            ]
            results = await asyncio.gather(*pending, return_exceptions=True)
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise (
                        outcome
                        if isinstance(outcome, aiomqtt.MqttError)
                        else aiomqtt.MqttError(str(outcome))
                    )
            self._on_published(self._buffer.ack_through(batch[-1][0]))

    async def close(self, grace: float) -> None:
        """Flush what is buffered, publish `offline`, disconnect; bounded by `grace` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                if self._client is not None:
                    await self._buffer.wait_empty()
                client = self._client
                if client is not None:
                    await client.publish(
                        self._presence_topic, self._presence("offline"), qos=1, retain=True
                    )
                    return
        log.warning("mqtt_close_incomplete", extra={"buffered": len(self._buffer)})
