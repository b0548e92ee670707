"""Fault tests share the integration tier's real processes: broker, demo target, system."""

from tests.integration.conftest import broker, demo_target, system

__all__ = ["broker", "demo_target", "system"]
