"""`vigil-aggregator`: not built yet; see the aggregator issue."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Say plainly that the aggregator does not exist yet."""
    del argv
    print(
        "vigil-aggregator: not implemented yet (tracked as the aggregator issue)", file=sys.stderr
    )
    return 1
