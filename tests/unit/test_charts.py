"""The history views' SVG: well-formed, escaped, script-free, gaps kept, colours with words."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from aggregator.present.charts import (
    DayCell,
    LatencyPoint,
    latency_chart,
    status_badge,
    uptime_badge,
    uptime_bar,
)

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>&\"'"
START = 1_795_780_800.0  # 2026-11-27 12:00:00 UTC
END = START + 3600.0


def parse(svg: str) -> ET.Element:
    # The markup is this module's own output: parsing it is the test, not a trust decision.
    root = ET.fromstring(svg)  # noqa: S314
    assert root.tag == f"{NS}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def steady(n: int = 10, p50: float = 3.0, p95: float = 8.0) -> list[LatencyPoint]:
    return [(START + 60.0 * i, p50, p95) for i in range(n)]


def group(root: ET.Element, region: str, quantile: str) -> ET.Element:
    found = [
        g
        for g in root.iter(f"{NS}g")
        if g.get("data-region") == region and g.get("data-quantile") == quantile
    ]
    assert len(found) == 1
    return found[0]


def xs(line: ET.Element) -> list[float]:
    return [float(pair.split(",")[0]) for pair in (line.get("points") or "").split()]


def fills(root: ET.Element) -> list[str]:
    return [p.get("fill") or "" for p in root.iter(f"{NS}path")]


EVERY_KIND = {
    "chart": lambda: latency_chart({"us-east": steady()}, start=START, end=END),
    "chart-empty": lambda: latency_chart({}, start=START, end=END),
    "status": lambda: status_badge("api", "up"),
    "uptime": lambda: uptime_badge("api", 0.9995, "30d"),
    "bar": lambda: uptime_bar([(START, 1.0), (START + 86400, None)]),
}


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_output_is_an_accessible_svg_without_script_style_or_links(kind: str) -> None:
    """Every output is an SVG image with a title, and nothing a strict CSP would block."""
    root = parse(EVERY_KIND[kind]())
    assert root.get("role") == "img"
    title = root.find(f"{NS}title")
    assert title is not None
    assert title.text
    assert root.get("aria-label") == title.text
    for element in root.iter():
        assert element.tag.removeprefix(NS) not in {"script", "foreignObject", "image", "a"}
        assert "style" not in element.attrib
        assert not any("href" in name for name in element.attrib)
        assert not any(name.startswith("on") for name in element.attrib)


def test_hostile_region_and_title_are_escaped_in_the_chart() -> None:
    """A region or title carrying markup is shown as text, never as an element."""
    svg = latency_chart({HOSTILE: steady()}, start=START, end=END, title=HOSTILE)
    assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in svg
    root = parse(svg)
    assert not [e for e in root.iter() if "script" in e.tag]
    assert root.get("aria-label") == HOSTILE
    assert HOSTILE in texts(root)
    assert group(root, HOSTILE, "p50").get("data-region") == HOSTILE


@pytest.mark.parametrize("make", [status_badge, lambda label, _: uptime_badge(label, 1.0, "7d")])
def test_hostile_badge_label_is_escaped(make: object) -> None:
    """A badge label carrying markup is shown as text, never as an element."""
    assert callable(make)
    svg = make(HOSTILE, "up")
    assert "<script" not in svg
    root = parse(svg)
    assert not [e for e in root.iter() if "script" in e.tag]
    assert HOSTILE in texts(root)


def test_characters_xml_forbids_are_dropped() -> None:
    """Control characters in outside text are removed so the markup still parses."""
    root = parse(status_badge("a\x00b\x1bc", "up"))
    assert "abc" in texts(root)
    parse(latency_chart({"r\x01": steady()}, start=START, end=END, title="t\x02"))


@pytest.mark.parametrize(
    ("budgets", "labels"),
    [
        ((5.0, 20.0, 50.0), ["5 ms", "20 ms", "50 ms"]),
        ((0.5,), ["0.5 ms"]),
        ((250.0, 1000.0), ["250 ms", "1000 ms"]),
    ],
)
def test_budgets_are_labelled_lines(budgets: tuple[float, ...], labels: list[str]) -> None:
    """Each budget is drawn as a dotted line with its value in words."""
    root = parse(latency_chart({"r": steady()}, start=START, end=END, budgets_ms=budgets))
    shown = texts(root)
    for label in labels:
        assert label in shown
    dotted = [line for line in root.iter(f"{NS}line") if line.get("stroke-dasharray") == "1,3"]
    assert len(dotted) == len(budgets)


def test_y_axis_reaches_past_the_largest_budget_and_value() -> None:
    """The axis covers both the slowest value and the largest budget."""
    root = parse(latency_chart({"r": steady(p95=300.0)}, start=START, end=END))
    assert "300 ms" in texts(root)
    root = parse(latency_chart({"r": steady()}, start=START, end=END, budgets_ms=(500.0,)))
    assert "400 ms" in texts(root)
    (budget,) = [line for line in root.iter(f"{NS}line") if line.get("stroke-dasharray") == "1,3"]
    assert 0 < float(budget.get("y1") or -1) < 240


def test_none_in_the_middle_splits_the_line() -> None:
    """A bucket without a value breaks that quantile's line in two; the other is whole."""
    points = steady(9)
    points[4] = (points[4][0], None, 8.0)
    root = parse(latency_chart({"r": points}, start=START, end=END))
    p50 = group(root, "r", "p50").findall(f"{NS}polyline")
    assert [len(xs(line)) for line in p50] == [4, 4]
    assert xs(p50[0])[-1] < xs(p50[1])[0]
    assert len(group(root, "r", "p95").findall(f"{NS}polyline")) == 1


def test_missing_stretch_of_buckets_splits_the_line() -> None:
    """A pause in the buckets is a gap, not a straight line across it."""
    points = steady(5) + [(START + 60.0 * i, 3.0, 8.0) for i in range(20, 25)]
    root = parse(latency_chart({"r": points}, start=START, end=END))
    for quantile in ("p50", "p95"):
        lines = group(root, "r", quantile).findall(f"{NS}polyline")
        assert [len(xs(line)) for line in lines] == [5, 5]


def test_lone_point_between_gaps_is_a_dot() -> None:
    """A value with no neighbour is marked, since a one-point line draws nothing."""
    points: list[LatencyPoint] = [
        (START, 3.0, 8.0),
        (START + 60, None, None),
        (START + 120, 4.0, 9.0),
        (START + 180, None, None),
    ]
    root = parse(latency_chart({"r": points}, start=START, end=END))
    p50 = group(root, "r", "p50")
    assert p50.findall(f"{NS}polyline") == []
    assert len(p50.findall(f"{NS}circle")) == 2


def test_points_outside_the_window_are_not_drawn() -> None:
    """Points before start or after end neither draw nor stretch the axis."""
    points: list[LatencyPoint] = [
        (START - 120, 9000.0, 9000.0),
        (START - 60, 9000.0, 9000.0),
        *steady(5),
        (END + 60, 9000.0, 9000.0),
    ]
    root = parse(latency_chart({"r": points}, start=START, end=END))
    (line,) = group(root, "r", "p50").findall(f"{NS}polyline")
    assert len(xs(line)) == 5
    assert not [t for t in texts(root) if t.startswith(("8000", "9000", "10000"))]


@pytest.mark.parametrize(
    "series",
    [
        {},
        {"r": []},
        {"r": [(START, None, None), (START + 60, None, None)]},
        {"r": [(START - 60, 3.0, 8.0), (END + 60, 3.0, 8.0)]},
    ],
)
def test_nothing_to_draw_says_no_data(series: dict[str, list[LatencyPoint]]) -> None:
    """A window without a single value renders a chart that says so in words."""
    root = parse(latency_chart(series, start=START, end=END))
    assert texts(root) == ["no data"]
    assert root.findall(f".//{NS}polyline") == []
    assert root.get("aria-label") == "Latency: no data"


def test_empty_window_says_no_data() -> None:
    """An end at or before the start cannot be drawn, and says so."""
    assert texts(parse(latency_chart({"r": steady()}, start=END, end=START))) == ["no data"]


def test_time_axis_is_labelled_in_utc() -> None:
    """The x axis carries a handful of UTC HH:MM labels from start to end."""
    shown = texts(parse(latency_chart({"r": steady()}, start=START, end=END)))
    assert {"12:00", "12:30", "13:00"} <= set(shown)
    assert "time in UTC" in shown
    assert 3 <= sum(1 for t in shown if len(t) == 5 and t[2] == ":") <= 7


def test_legend_names_regions_and_the_dash_convention() -> None:
    """Regions differ in colour and are named; p95 is dashed, p50 solid."""
    root = parse(latency_chart({"eu-west": steady(), "us-east": steady()}, start=START, end=END))
    shown = texts(root)
    assert {"p50 solid / p95 dashed", "eu-west", "us-east"} <= set(shown)
    assert group(root, "eu-west", "p50").get("stroke") != group(root, "us-east", "p50").get(
        "stroke"
    )
    assert group(root, "eu-west", "p50").get("stroke-dasharray") is None
    assert group(root, "eu-west", "p95").get("stroke-dasharray")


def test_region_without_values_is_named_in_the_legend() -> None:
    """A region with nothing in the window is listed as having no data."""
    root = parse(latency_chart({"a": steady(), "b": []}, start=START, end=END))
    assert "b (no data)" in texts(root)


@pytest.mark.parametrize(
    ("verdict", "word", "colour"),
    [
        ("up", "up", "#4c1"),
        ("degraded", "degraded", "#dfb317"),
        ("down", "down", "#e05d44"),
        ("unknown", "unknown", "#9f9f9f"),
        ("sideways", "unknown", "#9f9f9f"),
        ("", "unknown", "#9f9f9f"),
    ],
)
def test_status_badge_says_and_colours_the_verdict(verdict: str, word: str, colour: str) -> None:
    """The message is the verdict word on its colour, the label on grey."""
    root = parse(status_badge("api", verdict))
    assert fills(root) == ["#555", colour]
    assert texts(root) == ["api", "api", word, word]
    assert root.get("aria-label") == f"api: {word}"


@pytest.mark.parametrize(
    ("availability", "message", "colour"),
    [
        (1.0, "100.00% 30d", "#4c1"),
        (0.99999, "99.99% 30d", "#4c1"),
        (0.9999999999, "99.99% 30d", "#4c1"),
        (0.9995, "99.95% 30d", "#4c1"),
        (0.999, "99.90% 30d", "#4c1"),
        (0.99899, "99.89% 30d", "#dfb317"),
        (0.99, "99.00% 30d", "#dfb317"),
        (0.98999, "98.99% 30d", "#fe7d37"),
        (0.95, "95.00% 30d", "#fe7d37"),
        (0.9499, "94.99% 30d", "#e05d44"),
        (0.0, "0.00% 30d", "#e05d44"),
        (None, "no data", "#9f9f9f"),
        (float("nan"), "no data", "#9f9f9f"),
    ],
)
def test_uptime_badge_figure_and_colour(
    availability: float | None, message: str, colour: str
) -> None:
    """Availability is cut, never rounded up, to two decimals and coloured by threshold."""
    root = parse(uptime_badge("api", availability, "30d"))
    assert fills(root) == ["#555", colour]
    assert texts(root)[2:] == [message, message]


def test_badge_text_has_a_shadow() -> None:
    """Each text is drawn twice: a faint dark copy one pixel lower, then white."""
    root = parse(status_badge("api", "up"))
    shadow, face, *_ = root.iter(f"{NS}text")
    assert (shadow.get("fill"), shadow.get("fill-opacity"), shadow.get("y")) == (
        "#010101",
        ".3",
        "15",
    )
    assert face.get("y") == "14"


def test_badge_width_follows_the_text() -> None:
    """A longer label makes a wider badge of the same height."""
    short, long = parse(status_badge("a", "up")), parse(status_badge("a-much-longer-name", "up"))
    assert short.get("height") == long.get("height") == "20"
    assert float(long.get("width") or 0) > float(short.get("width") or 0) + 50


def test_long_label_is_cut_with_an_ellipsis() -> None:
    """A label over 100 characters shows its first 99 and an ellipsis."""
    root = parse(status_badge("x" * 150, "up"))
    assert texts(root)[0] == "x" * 99 + "…"
    assert texts(parse(status_badge("y" * 100, "up")))[0] == "y" * 100


def test_uptime_bar_has_one_titled_rect_per_day() -> None:
    """Each day is a rect, oldest left, with its date and figure in words."""
    days: list[DayCell] = [
        (START + 86400, None),
        (START, 0.9995),
        (START + 2 * 86400, 0.9),
    ]
    root = parse(uptime_bar(days))
    rects = root.findall(f"{NS}rect")
    assert len(rects) == len(days)
    titles = [r.findtext(f"{NS}title") for r in rects]
    assert titles == ["2026-11-27: 99.95% up", "2026-11-28: no data", "2026-11-29: 90.00% up"]
    assert [r.get("fill") for r in rects] == ["#4c1", "#9f9f9f", "#e05d44"]
    left = [float(r.get("x") or 0) for r in rects]
    assert left == sorted(left)
    assert left[0] == 0


def test_uptime_bar_describes_the_days_in_words() -> None:
    """The description counts the days and names the worst one."""
    days: list[DayCell] = [(START + 86400 * i, 1.0) for i in range(89)]
    days.append((START - 86400, 0.5))
    root = parse(uptime_bar(days))
    assert len(root.findall(f"{NS}rect")) == 90
    assert root.findtext(f"{NS}desc") == (
        "90 days: 89 at or above 99.90%, 1 below, 0 with no data; lowest 50.00% on 2026-11-26"
    )


def test_uptime_bar_without_days_says_no_data() -> None:
    """No days at all renders a bar that says so in words."""
    root = parse(uptime_bar([]))
    assert texts(root) == ["no data"]
    assert root.findall(f"{NS}rect[title]") == []
