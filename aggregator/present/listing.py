"""Which targets a status listing shows, in what order, one page at a time. Pure.

The listing is filtered by verdict, region and a name search, ordered problems first (down,
degraded, unknown, up) then by name, and cut into pages. A page's cursor encodes the sort
key of its last item, not an offset, so targets appearing or leaving between two requests
neither repeat nor skip an unchanged one. Counting and ordering read only each target's
stored verdict and name: no per-target view is built for targets off the page.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aggregator.core.rules import TargetSnapshot

# Problems first: the order of the listing and of every count shown.
VERDICTS = ("down", "degraded", "unknown", "up")
RANK = {v: i for i, v in enumerate(VERDICTS)}
PROBLEMS = frozenset({"down", "degraded", "unknown"})
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SEARCH = 200
PARAMETERS = ("verdict", "region", "q", "limit", "cursor")

Key = tuple[int, str]


class QueryError(ValueError):
    """A listing parameter that cannot be honoured; the message names it."""


@dataclass(frozen=True)
class StatusQuery:
    """What a listing asks for; None means no such filter."""

    verdicts: frozenset[str] | None = None
    region: str | None = None
    search: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    # The limit when none is asked (the page shows fewer rows than the API): links leave it out.
    default_limit: int = DEFAULT_LIMIT

    @property
    def after(self) -> Key | None:
        """The sort key the page starts after."""
        return decode_cursor(self.cursor) if self.cursor else None

    def params(self, *, cursor: str | None = None) -> dict[str, str]:
        """This query's filters as URL parameters (limit only when not the default)."""
        out: dict[str, str] = {}
        if self.verdicts is not None:
            out["verdict"] = ",".join(v for v in VERDICTS if v in self.verdicts)
        if self.region is not None:
            out["region"] = self.region
        if self.search is not None:
            out["q"] = self.search
        if self.limit != self.default_limit:
            out["limit"] = str(self.limit)
        if cursor is not None:
            out["cursor"] = cursor
        return out


def _said(value: str) -> str:
    return repr(value[:60] + ("..." if len(value) > 60 else ""))


def parse_query(
    params: Iterable[tuple[str, str]], regions: Sequence[str], *, default_limit: int = DEFAULT_LIMIT
) -> StatusQuery:
    """The listing asked for by URL parameters; an empty value is the same as none.

    Raises:
        QueryError: an unknown parameter, verdict or region, a parameter given twice, a limit
            outside 1..MAX_LIMIT, a search longer than MAX_SEARCH, or a cursor this listing
            did not make.
    """
    given: dict[str, str] = {}
    for name, value in params:
        if name not in PARAMETERS:
            raise QueryError(f"unknown parameter {_said(name)}; known: {', '.join(PARAMETERS)}")
        if name in given:
            raise QueryError(f"parameter {name!r} given more than once")
        given[name] = value.strip()
    verdicts = None
    if given.get("verdict"):
        asked = [v.strip() for v in given["verdict"].split(",") if v.strip()]
        for v in asked:
            if v not in RANK:
                raise QueryError(f"unknown verdict {_said(v)}; known: {', '.join(VERDICTS)}")
        verdicts = frozenset(asked) or None
    region = given.get("region") or None
    if region is not None and region not in regions:
        raise QueryError(f"unknown region {_said(region)}; configured: {', '.join(regions)}")
    search = given.get("q") or None
    if search is not None and len(search) > MAX_SEARCH:
        raise QueryError(f"q is longer than {MAX_SEARCH} characters")
    limit = default_limit
    if given.get("limit"):
        text = given["limit"]
        if (
            not (text.isascii() and text.isdigit() and len(text) < 6)
            or not 1 <= int(text) <= MAX_LIMIT
        ):
            raise QueryError(
                f"limit must be a whole number from 1 to {MAX_LIMIT}, not {_said(text)}"
            )
        limit = int(text)
    cursor = given.get("cursor") or None
    if cursor is not None:
        decode_cursor(cursor)
    return StatusQuery(verdicts, region, search, limit, cursor, default_limit)


def encode_cursor(key: Key) -> str:
    """An opaque cursor for the page after `key`."""
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR_CHARS = 512


def decode_cursor(cursor: str) -> Key:
    """The sort key a cursor encodes.

    Raises:
        QueryError: not a cursor this listing made.
    """
    # A cursor this listing made holds a rank and a name: about 100 characters. Anything much
    # longer is not one, and is not decoded (a deeply nested one would exhaust the parser).
    if len(cursor) > MAX_CURSOR_CHARS:
        raise QueryError("bad cursor: pass next_cursor from the previous page as it is")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, name = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise QueryError("bad cursor: pass next_cursor from the previous page as it is") from None
    if type(rank) is not int or not 0 <= rank < len(VERDICTS) or not isinstance(name, str):
        raise QueryError("bad cursor: pass next_cursor from the previous page as it is")
    return rank, name


def verdict_of(target: TargetSnapshot) -> str:
    """The verdict a listing shows: before its first evaluation a target is unknown."""
    return target.verdict.value if target.evaluation is not None else "unknown"


@dataclass(frozen=True)
class Page:
    """One page of a listing, with the counts around it."""

    names: list[str]
    # By verdict over every target, whatever the filter.
    counts: dict[str, int]
    # By verdict over the targets the region and search filters keep (not the verdict one).
    matching: dict[str, int]
    # Targets every filter keeps, over all pages.
    matched: int
    next_cursor: str | None


def select(targets: Iterable[TargetSnapshot], query: StatusQuery) -> Page:
    """The page of `targets` that `query` asks for, and the counts."""
    counts = dict.fromkeys(VERDICTS, 0)
    matching = dict.fromkeys(VERDICTS, 0)
    search = query.search.casefold() if query.search else None
    # Names by verdict: one list append per target, no per-target key or view, so a page of
    # 10,000 targets costs little more than reading each one's verdict and name.
    kept: dict[str, list[str]] = {v: [] for v in VERDICTS}
    for t in targets:
        verdict = verdict_of(t)
        counts[verdict] += 1
        if query.region is not None and query.region not in t.regions:
            continue
        if search is not None and search not in t.name.casefold():
            continue
        matching[verdict] += 1
        if query.verdicts is None or verdict in query.verdicts:
            kept[verdict].append(t.name)
    after = query.after
    # One more than the page holds says whether another page follows.
    want = query.limit + 1
    page: list[Key] = []
    for verdict in VERDICTS:
        rank, names = RANK[verdict], kept[verdict]
        if after is not None and rank < after[0]:
            continue
        if after is not None and rank == after[0]:
            names = [n for n in names if n > after[1]]
        page += ((rank, n) for n in heapq.nsmallest(want - len(page), names))
        if len(page) == want:
            break
    more = len(page) > query.limit
    page = page[: query.limit]
    return Page(
        names=[name for _, name in page],
        counts=counts,
        matching=matching,
        matched=sum(len(names) for names in kept.values()),
        next_cursor=encode_cursor(page[-1]) if more else None,
    )
