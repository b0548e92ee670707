"""The status listing's parameters, order, counts and cursor, on plain target states."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from aggregator.core.rules import Evaluation, RegionView, TargetState, Verdict
from aggregator.present.listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    QueryError,
    StatusQuery,
    decode_cursor,
    encode_cursor,
    parse_query,
    select,
)

REGIONS = ("us-east", "eu-west", "ap-southeast")


def target(name: str, verdict: str, regions: tuple[str, ...] = REGIONS) -> TargetState:
    """A target's state with `verdict` ("unknown": never evaluated)."""
    state = TargetState(name=name, regions={r: RegionView() for r in regions})
    if verdict != "unknown":
        state.verdict = Verdict(verdict)
        state.evaluation = Evaluation(
            verdict=state.verdict,
            quorum_degraded=False,
            failing=frozenset(),
            fresh=frozenset(),
            stale=frozenset(),
            regions=(),
            versions={},
            required=3,
            min_regions=2,
        )
    return state


FLEET = [
    target("web", "up"),
    target("api", "down"),
    target("Billing", "degraded"),
    target("cdn", "up", ("us-east",)),
    target("search", "unknown"),
    target("auth", "degraded", ("eu-west",)),
    target("Api-internal", "up"),
]


def names(query: StatusQuery, fleet: list[TargetState] = FLEET) -> list[str]:
    return select(fleet, query).names


def walk(fleet: list[TargetState], query: StatusQuery) -> list[str]:
    """Every page's names in order from `query`'s cursor on, following next_cursor."""
    seen: list[str] = []
    cursor = query.cursor
    while True:
        page = select(fleet, dataclasses.replace(query, cursor=cursor))
        seen += page.names
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_order_is_problems_first_then_by_name() -> None:
    """Down, degraded, unknown, up; by name within each."""
    assert names(StatusQuery()) == [
        "api",
        "Billing",
        "auth",
        "search",
        "Api-internal",
        "cdn",
        "web",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (StatusQuery(verdicts=frozenset({"down", "degraded"})), ["api", "Billing", "auth"]),
        (StatusQuery(verdicts=frozenset({"up"})), ["Api-internal", "cdn", "web"]),
        (StatusQuery(search="API"), ["api", "Api-internal"]),
        (StatusQuery(search="i"), ["api", "Billing", "Api-internal"]),
        (StatusQuery(region="us-east"), ["api", "Billing", "search", "Api-internal", "cdn", "web"]),
        (StatusQuery(region="eu-west", verdicts=frozenset({"degraded"})), ["Billing", "auth"]),
        (StatusQuery(search="nothing-like-it"), []),
    ],
)
def test_filters(query: StatusQuery, expected: list[str]) -> None:
    """Verdict, region (targets it reports on) and a case-insensitive name search combine."""
    assert names(query) == expected


def test_counts_cover_every_target_and_the_filtered_ones() -> None:
    """`counts` ignore the filters, `matching` ignores only the verdict one, `matched` none."""
    page = select(FLEET, StatusQuery(search="a", verdicts=frozenset({"down"}), limit=1))
    assert page.counts == {"down": 1, "degraded": 2, "unknown": 1, "up": 3}
    # Names with an "a": api, auth, search, Api-internal.
    assert page.matching == {"down": 1, "degraded": 1, "unknown": 1, "up": 1}
    assert page.matched == 1
    assert page.names == ["api"]
    assert page.next_cursor is None


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_walking_every_page_gives_each_target_once(limit: int) -> None:
    """Following next_cursor lists every target once, in order, and ends with null."""
    assert walk(FLEET, StatusQuery(limit=limit)) == names(StatusQuery())


def test_cursor_survives_targets_added_and_removed_between_pages() -> None:
    """A target added or removed between pages neither repeats nor skips an unchanged one."""
    fleet = list(FLEET)
    first = select(fleet, StatusQuery(limit=3))
    assert first.names == ["api", "Billing", "auth"]
    # Before the cursor: a new down target and one removed; after it: a new up target.
    fleet.append(target("aaa-new-down", "down"))
    fleet.remove(next(t for t in fleet if t.name == "Billing"))
    fleet.append(target("zzz-new-up", "up"))
    fleet.remove(next(t for t in fleet if t.name == "cdn"))
    rest = walk(fleet, StatusQuery(limit=2, cursor=first.next_cursor))
    assert rest == ["search", "Api-internal", "web", "zzz-new-up"]


def test_the_page_after_the_last_item_is_empty() -> None:
    """A cursor past every target gives no targets and no next cursor."""
    page = select(FLEET, StatusQuery(cursor=encode_cursor((3, "zzzz"))))
    assert (page.names, page.next_cursor) == ([], None)
    assert page.counts["up"] == 3


def test_cursor_round_trips() -> None:
    """A cursor carries the sort key and nothing else."""
    assert decode_cursor(encode_cursor((2, "a/b ü"))) == (2, "a/b ü")


def test_parse_query_reads_every_parameter() -> None:
    """verdict, region, q, limit and cursor; empty values are the same as absent."""
    cursor = encode_cursor((0, "api"))
    query = parse_query(
        [
            ("verdict", "down, degraded"),
            ("region", "eu-west"),
            ("q", " api "),
            ("limit", "50"),
            ("cursor", cursor),
        ],
        REGIONS,
    )
    assert query == StatusQuery(frozenset({"down", "degraded"}), "eu-west", "api", 50, cursor)
    assert query.params() == {
        "verdict": "down,degraded",
        "region": "eu-west",
        "q": "api",
        "limit": "50",
    }
    empty = [("verdict", ""), ("region", ""), ("q", ""), ("limit", ""), ("cursor", "")]
    assert parse_query(empty, REGIONS) == StatusQuery()
    assert StatusQuery().limit == DEFAULT_LIMIT


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ([("verdict", "down,sideways")], "unknown verdict 'sideways'; known: down, degraded"),
        ([("region", "mars")], "unknown region 'mars'; configured: us-east"),
        ([("limit", "0")], f"limit must be a whole number from 1 to {MAX_LIMIT}, not '0'"),
        ([("limit", str(MAX_LIMIT + 1))], "limit must be a whole number"),
        ([("limit", "ten")], "not 'ten'"),
        ([("limit", "²")], "limit must be a whole number"),
        ([("limit", "9" * 5000)], "limit must be a whole number"),
        ([("cursor", "not-a-cursor")], "bad cursor"),
        ([("cursor", encode_cursor((0, "x"))[:-3])], "bad cursor"),
        ([("cursor", "WzksImEiXQ")], "bad cursor"),  # [9,"a"]: no such verdict rank
        ([("cursor", "é")], "bad cursor"),
        ([("q", "x" * 201)], "q is longer than 200 characters"),
        ([("verdicts", "down")], "unknown parameter 'verdicts'; known: verdict, region"),
        ([("q", "a"), ("q", "b")], "parameter 'q' given more than once"),
    ],
)
def test_bad_parameters_are_named(params: list[tuple[str, str]], said: str) -> None:
    """Each bad parameter is refused with a message that names it."""
    with pytest.raises(QueryError) as caught:
        parse_query(params, REGIONS)
    assert said in str(caught.value)


def test_a_long_bad_value_is_cut_short_in_the_message() -> None:
    """A hostile value is not echoed whole."""
    with pytest.raises(QueryError) as caught:
        parse_query([("verdict", "x" * 5000)], REGIONS)
    assert len(str(caught.value)) < 200


def test_a_deeply_nested_or_huge_cursor_is_a_clear_400_not_a_crash() -> None:
    """A cursor made to exhaust the JSON parser is refused like any forged one."""
    for raw in (b"[" * 5000, b"[" + b"1," * 10_000 + b"1]"):
        cursor = base64.urlsafe_b64encode(raw).decode()
        with pytest.raises(QueryError, match="bad cursor"):
            decode_cursor(cursor)
