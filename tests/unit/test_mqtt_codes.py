"""Reading MQTT return codes: a refused protocol version, a refused subscription."""

from __future__ import annotations

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from aggregator.edges.mqtt import _refused
from runtime.mqtt import refused_for_protocol


def connack(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=code)


def suback(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.SUBACK, identifier=code)


@pytest.mark.parametrize(
    ("exc", "refused"),
    [
        (MqttConnectError(1), True),  # 3.1.1: unacceptable protocol version
        (MqttConnectError(connack(132)), True),  # 5: unsupported protocol version
        (aiomqtt.MqttCodeError(132), True),
        (MqttConnectError(4), False),  # bad username or password
        (MqttConnectError(5), False),  # not authorised
        (MqttConnectError(connack(135)), False),  # 5: not authorized
        (MqttConnectError(connack(136)), False),  # 5: server unavailable
        (aiomqtt.MqttCodeError(None), False),
        (aiomqtt.MqttError("connection lost"), False),
        (OSError("refused"), False),
    ],
)
def test_refused_for_protocol(exc: BaseException, refused: bool) -> None:
    """Only rc 1 (MQTT 3.1.1) and 132 (MQTT 5) mean the broker refused the protocol version."""
    assert refused_for_protocol(exc) is refused


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        (0, False),  # 3.1.1: granted QoS 0
        (1, False),
        (2, False),
        (0x80, True),  # 3.1.1: failure
        (suback(0), False),  # 5: granted QoS 0
        (suback(1), False),
        (suback(2), False),
        (suback(0x80), True),  # 5: unspecified error
        (suback(0x87), True),  # 5: not authorized
        (suback(0x8F), True),  # 5: topic filter invalid
        (suback(0xA2), True),  # 5: wildcard subscriptions not supported
    ],
)
def test_refused_suback_codes(code: object, refused: bool) -> None:
    """A SUBACK code of 0x80 or more is a refusal, in MQTT 3.1.1 and MQTT 5 alike."""
    assert _refused(code) is refused
