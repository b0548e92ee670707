"""The MQTT edges against fake clients at their seams: no broker, no network.

`Connector` builds clients through the `build` callable it is given; `Subscriber` consumes and
subscribes through the client it is handed. Fakes stand exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from aggregator.edges.mqtt import StateOutbox, Subscriber
from runtime.config import MqttSettings
from runtime.mqtt import V5, V311, Connector
from tests.polling import wait_until
from wire.topics import RESULTS_FILTER, aggregator_filters

log = logging.getLogger("tests.mqtt_edges")

Refusal = Callable[[aiomqtt.ProtocolVersion], BaseException | None]


class FakeConnectClient:
    """Enters like an aiomqtt client, or fails to with the error it was built with."""

    def __init__(self, protocol: aiomqtt.ProtocolVersion, error: BaseException | None) -> None:
        self.protocol = protocol
        self.error = error

    async def __aenter__(self) -> FakeConnectClient:
        if self.error is not None:
            raise self.error
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None


class Builds:
    """The `build` callable: records each protocol asked for; `refuse` scripts the broker."""

    def __init__(self, refuse: Refusal) -> None:
        self.refuse = refuse
        self.protocols: list[aiomqtt.ProtocolVersion] = []

    def __call__(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        self.protocols.append(protocol)
        return cast(aiomqtt.Client, FakeConnectClient(protocol, self.refuse(protocol)))


def v5_refused(rc: int | ReasonCode) -> Refusal:
    return lambda p: MqttConnectError(rc) if p == V5 else None


def v5_silent(p: aiomqtt.ProtocolVersion) -> BaseException | None:
    # amqtt never answers an MQTT 5 CONNECT: the connect times out, with no code at all.
    return aiomqtt.MqttError("Operation timed out") if p == V5 else None


def all_refused(rc: int | ReasonCode) -> Refusal:
    return lambda _p: MqttConnectError(rc)


def unreachable(_p: aiomqtt.ProtocolVersion) -> BaseException:
    return aiomqtt.MqttError("Operation timed out")


def accepted(_p: aiomqtt.ProtocolVersion) -> None:
    return None


UNSUPPORTED_V5 = ReasonCode(PacketTypes.CONNACK, identifier=132)
NOT_AUTHORIZED_V5 = ReasonCode(PacketTypes.CONNACK, identifier=135)


def connector(protocol: str, builds: Builds) -> Connector:
    settings = MqttSettings.model_validate({"protocol": protocol, "reconnect_max": 0.05})
    return Connector(settings, builds, log)


async def connect_or_give_up(conn: Connector, builds: Builds, tries: int) -> object | None:
    """The connected client, or None after `tries` failed builds."""
    async with contextlib.AsyncExitStack() as stack:
        task = asyncio.create_task(conn.connect(stack))
        await wait_until(lambda: task.done() or len(builds.protocols) >= tries, what="tries")
        if task.done():
            return await task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None


@pytest.mark.parametrize(
    ("protocol", "refuse", "expected", "connects"),
    [
        pytest.param("auto", accepted, [V5], True, id="auto-v5-works"),
        pytest.param("auto", v5_refused(UNSUPPORTED_V5), [V5, V311], True, id="auto-rc132"),
        # A 3.1.1 broker answers an MQTT 5 CONNECT with CONNACK rc 1.
        pytest.param("auto", v5_refused(1), [V5, V311], True, id="auto-rc1"),
        pytest.param("auto", v5_silent, [V5, V311], True, id="auto-v5-unanswered"),
        # Until a first connect proves a version, every failure alternates the version.
        pytest.param(
            "auto", all_refused(5), [V5, V311, V5, V311], False, id="auto-unsettled-alternates"
        ),
        # 5 means 5: never 3.1.1, whatever the broker says.
        pytest.param("5", v5_refused(UNSUPPORTED_V5), [V5, V5, V5], False, id="5-rc132"),
        pytest.param("5", v5_refused(1), [V5, V5, V5], False, id="5-rc1"),
        pytest.param("5", unreachable, [V5, V5, V5], False, id="5-unreachable"),
        pytest.param("3.1.1", accepted, [V311], True, id="311-works"),
        pytest.param("3.1.1", unreachable, [V311, V311, V311], False, id="311-never-tries-5"),
    ],
)
async def test_protocol_choice_and_fallback(
    protocol: str, refuse: Refusal, expected: list[aiomqtt.ProtocolVersion], connects: bool
) -> None:
    """`auto` starts at MQTT 5 and moves to 3.1.1 when 5 fails; `5` and `3.1.1` keep to theirs."""
    builds = Builds(refuse)
    conn = connector(protocol, builds)
    client = await connect_or_give_up(conn, builds, len(expected))
    assert builds.protocols[: len(expected)] == expected
    if connects:
        assert client is not None
        assert cast(FakeConnectClient, client).protocol == expected[-1]
        assert len(builds.protocols) == len(expected)
    else:
        assert client is None


async def test_once_connected_auto_keeps_the_version_that_worked() -> None:
    """After a connect at a version, outages retry that version; only a version refusal moves."""
    builds = Builds(v5_refused(UNSUPPORTED_V5))
    conn = connector("auto", builds)
    assert await connect_or_give_up(conn, builds, 2) is not None
    builds.refuse = unreachable  # the broker goes away
    assert await connect_or_give_up(conn, builds, 5) is None
    builds.refuse = accepted
    assert await connect_or_give_up(conn, builds, 6) is not None
    assert builds.protocols == [V5, V311, V311, V311, V311, V311]

    builds = Builds(accepted)
    conn = connector("auto", builds)
    assert await connect_or_give_up(conn, builds, 1) is not None
    builds.refuse = unreachable
    assert await connect_or_give_up(conn, builds, 3) is None
    builds.refuse = v5_refused(UNSUPPORTED_V5)  # the broker came back speaking 3.1.1 only
    assert await connect_or_give_up(conn, builds, 5) is not None
    assert builds.protocols == [V5, V5, V5, V5, V311]


class FakeSession:
    """The client as the subscriber sees it: SUBACK codes per filter, a stream of messages."""

    def __init__(
        self,
        grants: dict[str, tuple[int, ...] | list[ReasonCode]] | None = None,
        messages: list[aiomqtt.Message] | None = None,
    ) -> None:
        self.grants = grants or {}
        self.queued = messages or []
        self.subscribed: list[str] = []

    async def subscribe(
        self,
        topic: str,
        qos: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - aiomqtt's own signature
    ) -> tuple[int, ...] | list[ReasonCode]:
        self.subscribed.append(topic)
        return self.grants.get(topic, (qos,))

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        async def stream() -> AsyncIterator[aiomqtt.Message]:
            for message in self.queued:
                yield message

        return stream()


def subscriber(on_message: Callable[[str, bytes, bool], None] = lambda *_a: None) -> Subscriber:
    return Subscriber(MqttSettings(), on_message, StateOutbox(), client_id="t", session_expiry=60)


@pytest.mark.parametrize(
    ("grant", "refused"),
    [
        pytest.param((1,), False, id="311-qos1"),
        pytest.param((0,), False, id="311-qos0"),  # a downgraded QoS is still a subscription
        pytest.param([ReasonCode(PacketTypes.SUBACK, identifier=1)], False, id="5-qos1"),
        pytest.param((0x80,), True, id="311-failure"),
        pytest.param([ReasonCode(PacketTypes.SUBACK, identifier=0x80)], True, id="5-unspecified"),
        pytest.param(
            [ReasonCode(PacketTypes.SUBACK, identifier=0x87)], True, id="5-not-authorized"
        ),
    ],
)
async def test_a_refused_subscription_raises_instead_of_counting_as_subscribed(
    grant: tuple[int, ...] | list[ReasonCode], refused: bool
) -> None:
    """A refused SUBACK raises, so the connection is retried; it never counts as subscribed."""
    sub = subscriber()
    client = FakeSession(grants={RESULTS_FILTER: grant})
    task = asyncio.create_task(sub._subscribe(cast(aiomqtt.Client, client)))
    await wait_until(lambda: task.done() or sub.subscribed.is_set(), what="the subscriptions")
    if refused:
        assert not sub.subscribed.is_set()
        assert task.done()
        exc = task.exception()
        assert isinstance(exc, aiomqtt.MqttError)
        assert RESULTS_FILTER in str(exc)
    else:
        assert sub.subscribed.is_set()
        assert client.subscribed == list(aggregator_filters("t"))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_crashing_handler_costs_one_message_not_the_subscription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler raising on one message is logged; every other message still arrives."""
    messages = [
        aiomqtt.Message(f"vigil/v1/results/us-east/t{i}", b"x%d" % i, 1, i % 2 == 0, i, None)
        for i in range(5)
    ]
    delivered: list[tuple[str, bytes, bool]] = []

    def handle(topic: str, payload: bytes, retain: bool) -> None:
        if topic.endswith("/t2"):
            raise ValueError("a bug in the handler")
        delivered.append((topic, payload, retain))

    sub = subscriber(handle)
    with caplog.at_level(logging.ERROR, logger="vigil.aggregator.edges.mqtt"):
        await asyncio.wait_for(
            sub._consume(cast(aiomqtt.Client, FakeSession(messages=messages))), timeout=10
        )
    assert [t for t, _, _ in delivered] == [f"vigil/v1/results/us-east/t{i}" for i in (0, 1, 3, 4)]
    assert delivered[0] == ("vigil/v1/results/us-east/t0", b"x0", True)
    crashes: list[Any] = [r for r in caplog.records if r.getMessage() == "message_handler_crashed"]
    assert len(crashes) == 1
    assert crashes[0].__dict__["topic"] == "vigil/v1/results/us-east/t2"
    assert crashes[0].exc_info is not None


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_sessions_that_end_at_once_back_off_and_a_stable_one_resets() -> None:
    """A connection lost right after its connect waits longer each time; a stable one resets."""
    builds = Builds(accepted)
    clock = ManualClock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = MqttSettings.model_validate({"reconnect_max": 30})
    conn = Connector(settings, builds, log, clock=clock, sleep=sleep)

    async def session(lasting: float) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await conn.connect(stack)
        clock.now += lasting

    for _ in range(5):
        await session(0.01)  # e.g. the subscription is refused at once
    assert len(waits) == 4  # the first connect never waits
    floors = [0.2, 0.4, 0.8, 1.6]
    assert all(f <= w <= f + 0.5 for f, w in zip(floors, waits, strict=True))
    await session(60.0)  # its connect still follows a short one: a fifth, longer wait
    assert len(waits) == 5
    assert 3.2 <= waits[-1] <= 3.7
    await session(0.01)
    assert len(waits) == 5  # after a stable session the reconnect is immediate
    await session(0.01)
    assert len(waits) == 6
    assert 0.2 <= waits[-1] <= 0.7  # and the backoff starts over


async def test_a_refused_subscription_does_not_reconnect_in_a_tight_loop() -> None:
    """Every SUBACK refused: the subscriber reconnects with growing waits, not in a storm."""
    clock = ManualClock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds
        await asyncio.sleep(0)

    refusing = FakeSession(grants={RESULTS_FILTER: (0x80,)})
    sub = Subscriber(
        MqttSettings.model_validate({"reconnect_max": 30}),
        lambda *_a: None,
        StateOutbox(),
        client_id="t",
        session_expiry=60,
    )
    sub._connector = Connector(  # the seam: the client it builds is the fake session
        MqttSettings.model_validate({"reconnect_max": 30}),
        lambda _p: cast(aiomqtt.Client, ContextOf(refusing)),
        log,
        clock=clock,
        sleep=sleep,
    )
    task = asyncio.create_task(sub.run())
    await wait_until(lambda: len(waits) >= 6, what="six backed-off reconnects")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not sub.subscribed.is_set()
    assert waits[5] >= 6.4  # 0.2 doubling: the sixth wait is at least 6.4 s
    assert len(refusing.subscribed) <= 3 * (len(waits) + 1)


class ContextOf:
    """Enters as the fake session it wraps, like an aiomqtt client entering itself."""

    def __init__(self, inner: FakeSession) -> None:
        self.inner = inner

    async def __aenter__(self) -> FakeSession:
        return self.inner

    async def __aexit__(self, *_exc: object) -> None:
        return None
