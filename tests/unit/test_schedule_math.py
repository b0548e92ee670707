"""Scheduler arithmetic: fixed rate, spread starts, skipping slots that are too late."""

from __future__ import annotations

import pytest

from probe.schedule import OVERLOAD_LATENESS, due_at, first_due, next_index, smoothed


def test_first_due_spreads_within_one_interval() -> None:
    """Jitter places the first run inside the first interval."""
    assert first_due(100.0, 10.0, 0.0) == 100.0
    assert first_due(100.0, 10.0, 0.5) == 105.0
    with pytest.raises(ValueError, match="jitter"):
        first_due(100.0, 10.0, 1.0)


def test_due_times_do_not_drift() -> None:
    """The millionth slot is exactly a million intervals after the first."""
    assert due_at(5.0, 0.1, 1_000_000) == pytest.approx(5.0 + 100_000.0, abs=1e-6)
    assert due_at(5.0, 10.0, 3) == 35.0


@pytest.mark.parametrize(
    ("done", "now", "expected"),
    [
        (0, 0.5, 1),  # on time: the next slot
        (0, 10.9, 1),  # finished late but inside the next interval: keep it
        (0, 15.0, 1),  # slot 1 (due 10) is 5 s late, less than an interval: still run it
        (0, 21.0, 2),  # slot 1 would start 11 s late: skipped, wait for slot 2
        (3, 100.0, 9),  # a long stall resumes the rhythm instead of bursting
    ],
)
def test_next_index_skips_only_slots_more_than_an_interval_late(
    done: int, now: float, expected: int
) -> None:
    """Only slots that could start more than one interval late are skipped."""
    assert next_index(0.0, 10.0, done, now) == expected


@pytest.mark.parametrize(
    ("samples", "above"),
    [
        # (sample, seconds since the previous one)
        ([(0.001, 0.001)] * 1000, False),  # on time, 1,000 starts a second
        ([(0.001, 0.001)] * 500 + [(0.3, 0.001)] * 3 + [(0.001, 0.001)] * 50, False),  # a GC
        ([(0.001, 0.001)] * 500 + [(0.2, 0.001)] * 1000, True),  # a second of backlog
        ([(0.2, 0.001)] * 3000 + [(0.001, 0.001)] * 3000, False),  # over, and recovered
        ([(0.001, 10.0)] * 5 + [(60.0, 60.0)], True),  # a minute's stall: one bad sample
        ([(60.0, 60.0)] + [(0.001, 1.0)] * 4, False),  # ... gone in seconds, few targets
    ],
    ids=["on-time", "one-pause", "backlog", "recovered", "stall", "stall-recovered"],
)
def test_smoothed_lateness_trips_on_a_backlog_not_on_a_pause(
    samples: list[tuple[float, float]], above: bool
) -> None:
    """The average that sheds load follows time, not the number of starts.

    A sustained backlog trips it, a pause does not, and it recovers within seconds.
    """
    average = 0.0
    for sample, elapsed in samples:
        average = smoothed(average, sample, elapsed)
    assert (average > OVERLOAD_LATENESS) is above
