"""A service's forever-tasks: stopping cleanly versus one of them dying."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runtime.service import until_stopped_or_crashed


async def test_stop_is_exit_0() -> None:
    """Setting stop ends the wait with 0 while the tasks still run."""
    stop = asyncio.Event()
    task = asyncio.create_task(asyncio.Event().wait())
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await until_stopped_or_crashed(stop, [task], logging.getLogger("t")) == 0
    assert not task.done()
    task.cancel()


async def test_a_crashed_task_is_exit_1_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A task that dies ends the service with 1 and logs what killed it."""

    async def boom() -> None:
        raise ValueError("Clean start only applies to MQTT V5")

    code = await until_stopped_or_crashed(
        asyncio.Event(), [asyncio.create_task(boom())], logging.getLogger("t")
    )
    assert code == 1
    assert "task_crashed" in caplog.text
