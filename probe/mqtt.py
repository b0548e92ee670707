"""Publishing results and presence to the broker: the probe's only MQTT code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import aiomqtt
import paho.mqtt.client as paho

from probe.buffer import ResultBuffer
from runtime.config import MqttSettings
from runtime.logs import Throttle
from runtime.mqtt import Connector, make_client
from wire.result import Presence
from wire.topics import presence_topic, result_topic

log = logging.getLogger("vigil.probe.mqtt")

# Results in flight at the broker at once (paho's max_inflight). Each is handed to paho
# synchronously and in order, so order on the wire is kept.
PUBLISH_WINDOW = 100
# Results handed to paho and not yet acknowledged, at most. Beyond the window paho queues
# them, in order, and sends each as an acknowledgement frees a slot, without waiting for a
# turn of the event loop: at 100 (the window alone) a probe busy with checks fell behind
# what it could check (at 2,000 checks/s offered, about 100 results a second arrived).
PUBLISH_LIMIT = 1000


class _Sent(NamedTuple):
    item_id: int
    mid: int
    at: float


class _Inflight:
    """One connection's result publishes, in order; acknowledges the buffer as they complete.

    Results go to paho directly rather than through `aiomqtt.Client.publish`, which costs
    two tasks, an event and a timer per message: on a probe running 1,000 checks a second
    that was a tenth of its CPU. Paho's PUBACK callback is chained: mids this connection
    sent are settled here, every other one (presence, through aiomqtt) goes on to aiomqtt.

    A result is acknowledged once it and every one before it were: the buffer removes in
    order. A publish paho refuses, or one unacknowledged for `timeout` seconds, fails the
    connection: the sender raises, reconnects, and sends again what was not acknowledged.
    """

    def __init__(
        self,
        client: aiomqtt.Client,
        buffer: ResultBuffer,
        on_published: Callable[[int], None],
        *,
        timeout: float,
        on_refused: Callable[[str], None] = lambda _reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paho = client._client
        self._buffer = buffer
        self._on_published = on_published
        self._on_refused = on_refused
        self._timeout = timeout
        self._clock = clock
        self._order: deque[_Sent] = deque()
        # Mids sent by this object and not acknowledged yet; acknowledged with a refusal.
        self._pending: set[int] = set()
        self._refused: set[int] = set()
        self._failure: aiomqtt.MqttError | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._open = True
        self._downstream = self._paho.on_publish
        self._paho.on_publish = self._on_publish

    def __len__(self) -> int:
        return len(self._order)

    def publish(self, item_id: int, topic: str, payload: bytes, *, retain: bool) -> None:
        """Hand one result to paho; raises `MqttError` when paho refuses it."""
        try:
            info = self._paho.publish(topic, payload, 1, retain)
        except (ValueError, TypeError) as exc:
            raise aiomqtt.MqttError(f"Could not publish message: {exc}") from exc
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        self._pending.add(info.mid)
        self._order.append(_Sent(item_id, info.mid, self._clock()))
        if len(self._order) >= PUBLISH_LIMIT:
            self._room.clear()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, *rest: Any) -> None:
        if mid not in self._pending:
            if self._downstream is not None:
                self._downstream(client, userdata, mid, *rest)
            return
        self._pending.discard(mid)
        if not self._open:
            return
        # Called from inside paho's packet handling: an exception here would leave paho's
        # own window slot taken. A bug costs a log line, never the connection's window.
        try:
            reason = rest[0] if rest else None
            if getattr(reason, "is_failure", False):
                # Refused (MQTT 5: an ACL's `Not authorized`, a quota): sending it again gets
                # the same answer and would hold back every result behind it. Dropped, counted
                # and logged; a probe all of whose results are refused goes silent, which the
                # aggregator reports.
                self._refused.add(mid)
                self._on_refused(str(reason))
            self._settle()
        except Exception:
            log.exception("puback_handling_failed", extra={"mid": mid})

    def _settle(self) -> None:
        last: int | None = None
        refused = 0
        while self._order and self._order[0].mid not in self._pending:
            sent = self._order.popleft()
            last = sent.item_id
            if sent.mid in self._refused:
                self._refused.discard(sent.mid)
                refused += 1
        if last is not None:
            self._on_published(self._buffer.ack_through(last) - refused)
            if len(self._order) < PUBLISH_LIMIT:
                self._room.set()

    def _fail(self, error: aiomqtt.MqttError) -> None:
        if self._failure is None:
            self._failure = error
            self._room.set()
            self._buffer.wake()

    def raise_failure(self) -> None:
        """Raise the connection's failure, if it has one."""
        if self._failure is not None:
            raise self._failure

    async def wait_room(self) -> None:
        """Return once fewer than `PUBLISH_LIMIT` publishes are in flight, or on failure."""
        await self._room.wait()

    async def watch(self, every: float = 1.0) -> None:
        """Fail the connection once its oldest publish has waited longer than the timeout."""
        while self._failure is None:
            await asyncio.sleep(every)
            if self._order and self._clock() - self._order[0].at > self._timeout:
                self._fail(aiomqtt.MqttError("Operation timed out"))

    def abandon(self) -> None:
        """Stop acknowledging for this connection; its client goes back to aiomqtt's own."""
        self._open = False
        self._paho.on_publish = self._downstream


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
        on_refused: Callable[[str], None] = lambda _reason: None,
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
        self._on_refused = on_refused
        self._refusals_logged = Throttle(60.0)
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
        """Publish each result as it comes, in order; raises `MqttError` when one fails.

        One turn of the event loop at a time, not in rounds: a round of a hundred publishes,
        then a hundred acknowledgements, each in one turn, held the loop for milliseconds a
        few times a second, and checks due meanwhile started that much late
        (docs/performance.md).
        """
        inflight = _Inflight(
            client,
            self._buffer,
            self._on_published,
            timeout=client.timeout,
            on_refused=self._refused,
        )
        watch = asyncio.create_task(inflight.watch())
        try:
            while True:
                inflight.raise_failure()
                room = PUBLISH_LIMIT - len(inflight)
                if room <= 0:
                    await inflight.wait_room()
                    continue
                batch = self._buffer.take(room)
                if not batch:
                    await self._buffer.wait_untaken()
                    continue
                # A replay is not retained: a connection lost mid-replay must not leave an
                # old result as a target's retained value (the newest stays, or comes next).
                for item_id, result, payload in batch:
                    inflight.publish(
                        item_id,
                        result_topic(result.region, result.target),
                        payload,
                        retain=not self._buffer.is_replay(item_id),
                    )
        finally:
            inflight.abandon()
            watch.cancel()

    def _refused(self, reason: str) -> None:
        self._on_refused(reason)
        if self._refusals_logged.ready(reason):
            log.error(
                "result_refused",
                extra={"reason": reason, "broker": self._settings.url, "dropped": True},
            )

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
