"""The shared retry backoff."""

from __future__ import annotations

from tenacity import RetryCallState

from runtime.retry import backoff


def wait_for_attempt(strategy: object, attempt: int) -> float:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    assert callable(strategy)
    return float(strategy(state))


def test_grows_exponentially_and_is_capped() -> None:
    """Waits double from the first one, never exceed cap plus jitter, and vary by jitter."""
    strategy = backoff(0.5, 10.0, jitter=1.0)
    waits = [wait_for_attempt(strategy, n) for n in range(1, 10)]
    assert 0.5 <= waits[0] <= 1.5 + 1.0
    assert all(w <= 11.0 for w in waits)
    assert waits[-1] >= 10.0
    assert len({round(wait_for_attempt(strategy, 3), 6) for _ in range(20)}) > 1
