"""The bounded result buffer."""

from __future__ import annotations

import asyncio

from probe.buffer import Outgoing, ResultBuffer
from wire.result import ErrorKind, Phases, ProbeResult

BOOT = "0123456789abcdef0123456789abcdef"


def result(seq: int) -> ProbeResult:
    return ProbeResult(
        probe_id="p",
        region="r",
        target="t",
        boot_id=BOOT,
        seq=seq,
        scheduled_at=1.0,
        started_at=1.0,
        duration_ms=1.0,
        ok=True,
        consecutive_failures=0,
        consecutive_successes=seq,
    )


def seqs(batch: list[Outgoing]) -> list[int]:
    return [out.result.seq for out in batch]


def test_drops_oldest_when_full_and_counts() -> None:
    """A full buffer makes room by dropping its oldest result, and counts the drop."""
    drops: list[int] = []
    buf = ResultBuffer(3, on_drop=lambda: drops.append(1))
    for seq in range(1, 6):
        buf.put(result(seq))
    assert seqs(buf.take(10)) == [3, 4, 5]
    assert len(drops) == 2


def test_results_leave_only_when_acknowledged() -> None:
    """Taking does not remove; acknowledging removes up to the given id, in order."""
    buf = ResultBuffer(10)
    for seq in range(1, 5):
        buf.put(result(seq))
    batch = buf.take(2)
    assert seqs(batch) == [1, 2]
    assert len(buf) == 4
    assert buf.ack_through(batch[-1].item_id) == 2
    assert seqs(buf.take(10)) == [3, 4]
    assert len(buf) == 2


def test_each_result_is_taken_once_until_a_rewind() -> None:
    """Each result is taken once, in order; a rewind (a reconnect) retakes the unacknowledged."""
    buf = ResultBuffer(10)
    for seq in (1, 2, 3):
        buf.put(result(seq))
    first = buf.take(2)
    assert seqs(first) == [1, 2]
    buf.put(result(4))
    assert seqs(buf.take(10)) == [3, 4]
    assert buf.take(10) == []
    buf.ack_through(first[0].item_id)
    assert buf.rewind() == 0
    again = buf.take(10)
    assert seqs(again) == [2, 3, 4]
    # Sent again as the very bytes sent the first time.
    assert again[0].payload == first[1].payload == result(2).to_json()


def test_ack_after_overflow_removes_only_what_was_sent() -> None:
    """Results dropped while a batch was in flight do not make the ack remove newer ones."""
    buf = ResultBuffer(2)
    buf.put(result(1))
    buf.put(result(2))
    batch = buf.take(2)
    buf.put(result(3))  # drops 1 while 1 and 2 are in flight
    buf.ack_through(batch[-1].item_id)
    assert seqs(buf.take(10)) == [3]


def test_an_overflow_does_not_skip_a_result_not_taken_yet() -> None:
    """Dropping a taken result while new ones arrive leaves the next one to take in place."""
    buf = ResultBuffer(2)
    buf.put(result(1))
    assert seqs(buf.take(1)) == [1]
    buf.put(result(2))
    buf.put(result(3))  # drops 1, which was taken
    assert seqs(buf.take(10)) == [2, 3]


async def test_wait_untaken_wakes_on_a_new_result_and_on_wake() -> None:
    """The sender sleeps while everything is taken; a new result or `wake` rouses it."""
    buf = ResultBuffer(10)
    buf.put(result(1))
    await asyncio.wait_for(buf.wait_untaken(), 1)
    buf.take(10)
    waiting = asyncio.ensure_future(buf.wait_untaken())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    buf.put(result(2))
    await asyncio.wait_for(waiting, 1)
    buf.take(10)
    waiting = asyncio.ensure_future(buf.wait_untaken())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    buf.wake()
    await asyncio.wait_for(waiting, 1)
    assert buf.take(10) == []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rewind_queues_recent_acknowledged_results_again_in_order() -> None:
    """After a reconnect, what the broker took within the window goes out again, first."""
    clock = Clock()
    buf = ResultBuffer(10, replay_window=30.0, clock=clock)
    for seq in (1, 2, 3):
        buf.put(result(seq))
    buf.ack_through(buf.take(1)[-1].item_id)  # seq 1, acknowledged at t=100
    clock.now = 120.0
    buf.ack_through(buf.take(2)[-1].item_id)  # seq 2 and 3 at t=120
    buf.put(result(4))
    clock.now = 140.0  # seq 1 is now 40 s old: past the window
    assert buf.rewind() == 2
    batch = buf.take(10)
    assert seqs(batch) == [2, 3, 4]
    ids = [out.item_id for out in batch]
    assert [buf.is_replay(i) for i in ids] == [True, True, False]
    # Sent and acknowledged again at t=145: the window still counts from the first
    # acknowledgement (t=120), so after t=150 only seq 4 (acknowledged at 145) is replayed.
    clock.now = 145.0
    buf.ack_through(ids[-1])
    assert len(buf) == 0
    clock.now = 151.0
    assert buf.rewind() == 1
    assert seqs(buf.take(10)) == [4]
    assert not buf.is_replay(ids[0])


def test_a_flapping_link_does_not_keep_replaying_old_results() -> None:
    """Replay, ack, reconnect, replay...: nothing older than the window ever goes out again."""
    clock = Clock()
    buf = ResultBuffer(100, replay_window=30.0, clock=clock)
    buf.put(result(1))
    buf.ack_through(buf.take(1)[-1].item_id)
    replays = 0
    for _ in range(10):
        clock.now += 10.0
        replays += buf.rewind()
        if len(buf):
            buf.ack_through(buf.take(100)[-1].item_id)
    # Acknowledged at t=100: replayed at 110, 120 and 130, never after.
    assert replays == 3


def test_rewind_is_bounded_and_off_by_default() -> None:
    """Replays never push out results not sent yet; without a window nothing is kept."""
    clock = Clock()
    buf = ResultBuffer(3, replay_window=60.0, clock=clock)
    for seq in (1, 2, 3):
        buf.put(result(seq))
    buf.ack_through(buf.take(3)[-1].item_id)
    buf.put(result(4))
    buf.put(result(5))
    assert buf.rewind() == 1
    assert seqs(buf.take(10)) == [3, 4, 5]
    plain = ResultBuffer(3)
    plain.put(result(1))
    plain.ack_through(plain.take(1)[-1].item_id)
    assert plain.rewind() == 0
    assert len(plain) == 0


def test_a_replayed_result_is_the_result_that_was_sent() -> None:
    """Kept encoded after its acknowledgement, a result comes back from rewind field for field."""
    full = result(7).model_copy(
        update={
            "ok": False,
            "consecutive_failures": 2,
            "consecutive_successes": 0,
            "error_kind": ErrorKind.HTTP_STATUS,
            "error": "HTTP 503, expected 200",
            "status_code": 503,
            "phases": Phases(connect=0.3, ttfb=3.6),
            "version": "3.7.9",
            "tls_not_after": 1_900_000_000.0,
            "interval": 10.0,
            "health_path": "/api/health/ping",
        }
    )
    buf = ResultBuffer(10, replay_window=30.0, clock=Clock())
    buf.put(full)
    buf.put(result(8))
    buf.ack_through(buf.take(2)[-1].item_id)
    assert buf.rewind() == 2
    batch = buf.take(10)
    assert [out.result for out in batch] == [full, result(8)]
    assert [out.payload for out in batch] == [full.to_json(), result(8).to_json()]
