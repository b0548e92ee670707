"""Burn rates and the runbook's SEV levels at and just under their thresholds."""

from __future__ import annotations

import pytest

from aggregator.core.uptime import BURN_SEV1, BURN_SEV2, burn_rate, severity

SLO = 0.999
BUDGET = 1 - SLO
# Just under a threshold: far below float noise in the burn rate, far above its rounding.
UNDER = 1e-9


def test_thresholds_are_the_runbooks() -> None:
    """6x the budget's burn over 5 minutes is SEV-1, 2x over an hour is SEV-2."""
    assert (BURN_SEV1, BURN_SEV2) == (6.0, 2.0)


@pytest.mark.parametrize(
    ("availability", "want"),
    [
        (None, None),  # nothing judged: no rate, not zero
        (1.0, 0.0),
        (SLO, 1.0),  # spends exactly the budget over the SLO window
        (1 - 2 * BUDGET, 2.0),
        (1 - 6 * BUDGET, 6.0),
        (0.0, 1 / BUDGET),  # down the whole time
    ],
)
def test_burn_rate_is_unavailability_over_the_budget(
    availability: float | None, want: float | None
) -> None:
    """The burn rate is the unavailable share over the error budget (1 - SLO)."""
    got = burn_rate(availability, SLO)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize(
    ("burn_5m", "burn_1h", "want"),
    [
        (BURN_SEV1, None, "SEV-1"),
        (BURN_SEV1 - UNDER, None, None),
        (BURN_SEV1 - UNDER, BURN_SEV2 - UNDER, None),
        (None, BURN_SEV2, "SEV-2"),
        (None, BURN_SEV2 - UNDER, None),
        (BURN_SEV1 - UNDER, BURN_SEV2, "SEV-2"),
        (BURN_SEV1, BURN_SEV2, "SEV-1"),  # the worse level wins
        (BURN_SEV1, BURN_SEV2 - UNDER, "SEV-1"),
        # A fast burn over 5 minutes alone is no SEV-2: that needs the hour's rate.
        (BURN_SEV2, None, None),
        (BURN_SEV1 - UNDER, 0.0, None),
        (None, None, None),
        (0.0, 0.0, None),
    ],
)
def test_severity_at_and_just_under_the_thresholds(
    burn_5m: float | None, burn_1h: float | None, want: str | None
) -> None:
    """SEV-1 from 6x over 5 minutes, SEV-2 from 2x over an hour, inclusive; nothing under."""
    assert severity(burn_5m, burn_1h) == want


@pytest.mark.parametrize(
    ("availability_5m", "availability_1h", "want"),
    [
        (1 - 6 * BUDGET, 1.0, "SEV-1"),
        (1 - 6 * BUDGET * (1 + 1e-6), 1.0, "SEV-1"),
        (1 - 6 * BUDGET * (1 - 1e-6), 1.0, None),
        (1.0, 1 - 2 * BUDGET * (1 + 1e-6), "SEV-2"),
        (1.0, 1 - 2 * BUDGET * (1 - 1e-6), None),
    ],
)
def test_severity_of_availabilities_around_the_thresholds(
    availability_5m: float, availability_1h: float, want: str | None
) -> None:
    """From availabilities: a hair over 6x (5 min) or 2x (1 h) pages, a hair under does not."""
    got = severity(burn_rate(availability_5m, SLO), burn_rate(availability_1h, SLO))
    assert got == want
