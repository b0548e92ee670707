"""Server-side SVG for the history views: latency lines, badges and the daily uptime bar.

Pure: numbers and names in, a string of SVG markup out. No script, no `style` attribute and no
reference outside the document, so the pages' strict Content-Security-Policy holds and a badge
can be served on its own as `image/svg+xml`. Colour never carries meaning alone: the legend
names every region, p95 is dashed where p50 is solid, and every badge and day says its state in
words. Every outside string is cleaned of characters XML forbids and escaped.
"""

from __future__ import annotations

import datetime
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from decimal import Decimal
from html import escape
from itertools import pairwise

# (bucket start epoch s, p50 ms, p95 ms); None: no data in that bucket.
LatencyPoint = tuple[float, float | None, float | None]
# (day start epoch s, availability 0..1); None: no data that day.
DayCell = tuple[float, float | None]

SVG_NS = "http://www.w3.org/2000/svg"
FONT = "Verdana,Geneva,DejaVu Sans,sans-serif"
# Okabe and Ito's palette, told apart under the common colour-vision deficiencies; its yellow
# is left out because it vanishes on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
P95_DASH = "6,3"
# Budgets are dotted so they are never mistaken for a p95 line; their label says what they are.
BUDGET_DASH = "1,3"
NO_DATA = "#9f9f9f"
BADGE_LABEL = "#555"
VERDICT_COLOURS = {"up": "#4c1", "degraded": "#dfb317", "down": "#e05d44"}
# First threshold met wins; below the last one it is red.
AVAILABILITY_COLOURS = ((0.999, "#4c1"), (0.99, "#dfb317"), (0.95, "#fe7d37"))
AVAILABILITY_LOW = "#e05d44"
MAX_LABEL = 100
MAX_LEGEND_NAME = 40
BADGE_HEIGHT = 20
BADGE_PAD = 10
LEGEND_ROW = 16

# Verdana 11px advance widths, roughly; anything not listed counts as a lower-case letter.
_NARROW = dict.fromkeys("ijl.,:;'|!`", 3.4)
_SLIM = dict.fromkeys('frtI()[]{}/\\- "', 4.6)
_WIDE = dict.fromkeys("mwMW%@", 10.6)
_UPPER = dict.fromkeys("ABCDEFGHJKLNOPQRSTUVXYZ", 7.6)
_DIGITS = dict.fromkeys("0123456789#$&+<=>?^_~*", 7.0)
_CHAR_WIDTH = {**_DIGITS, **_UPPER, **_SLIM, **_NARROW, **_WIDE}
_LOWER_WIDTH = 6.6

# Characters that may not appear in an XML 1.0 document at all, escaped or not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# The latest moment datetime can show (9999-12-31); times are clamped so formatting never raises.
_LATEST = 253_402_300_799.0
# Candidate spacings of the time axis, in seconds.
_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_TIME_TICKS = 6
_VALUE_TICKS = 4


def _clean(raw: str, limit: int = MAX_LABEL) -> str:
    """Outside text without XML-forbidden characters, cut to `limit` with an ellipsis."""
    text = _NOT_XML.sub("", raw)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(raw: str, limit: int = MAX_LABEL) -> str:
    return escape(_clean(raw, limit), quote=True)


def _n(value: float) -> str:
    """A coordinate to one decimal, without a trailing `.0`."""
    out = f"{value:.1f}"
    if out.endswith(".0"):
        out = out[:-2]
    return "0" if out == "-0" else out


def _utc(ts: float, fmt: str) -> str:
    clamped = min(max(ts, 0.0), _LATEST) if math.isfinite(ts) else 0.0
    return datetime.datetime.fromtimestamp(clamped, datetime.UTC).strftime(fmt)


def _svg(width: float, height: float, label: str, body: str, desc: str = "") -> str:
    name = _text(label)
    described = f"<desc>{_text(desc, 2000)}</desc>" if desc else ""
    return (
        f'<svg xmlns="{SVG_NS}" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{name}" '
        f'font-family="{FONT}" font-size="11"><title>{name}</title>{described}{body}</svg>'
    )


def _no_data(width: int, height: int, title: str) -> str:
    body = (
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fff" '
        f'stroke="#ccc"/><text x="{_n(width / 2)}" y="{_n(height / 2 + 4)}" '
        'text-anchor="middle" fill="#444">no data</text>'
    )
    return _svg(width, height, f"{title}: no data", body)


def text_width(text: str) -> float:
    """Approximate width in pixels of `text` set in Verdana 11px."""
    return sum(_CHAR_WIDTH.get(c, _LOWER_WIDTH) for c in text)


def percent(availability: float) -> str:
    """A fraction 0..1 as a percentage to two decimals, cut rather than rounded.

    Cutting means uptime is never overstated: 0.99999 reads 99.99%, only 1.0 reads 100.00%,
    and the figure shown always falls on the same side of a colour threshold as the fraction.
    """
    fraction = min(max(availability, 0.0), 1.0)
    # repr is the shortest exact spelling of the float, so 0.9995 is 9995 hundredths, not 9994.
    hundredths = int(Decimal(repr(fraction)) * 10_000)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def availability_colour(availability: float | None) -> str:
    """The badge and bar colour of an availability fraction; grey for no data."""
    if availability is None or not math.isfinite(availability):
        return NO_DATA
    return next((c for floor, c in AVAILABILITY_COLOURS if availability >= floor), AVAILABILITY_LOW)


# Latency chart


def _value(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return max(v, 0.0)


def _in_window(points: Sequence[LatencyPoint], start: float, end: float) -> list[LatencyPoint]:
    return sorted(
        (t, _value(p50), _value(p95))
        for t, p50, p95 in points
        if math.isfinite(t) and start <= t <= end
    )


def _bucket(points: Sequence[LatencyPoint]) -> float | None:
    """The usual spacing of a region's buckets; a longer pause between two is a gap."""
    diffs = [b[0] - a[0] for a, b in pairwise(points) if b[0] > a[0]]
    return statistics.median_low(diffs) if diffs else None


def _runs(points: Sequence[LatencyPoint], column: int) -> list[list[tuple[float, float]]]:
    """Unbroken stretches of one column; a None or a missing stretch of buckets ends one."""
    bucket = _bucket(points)
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    last: float | None = None
    for point in points:
        t, v = point[0], point[column]
        gap = last is not None and bucket is not None and t - last > 1.5 * bucket
        if (v is None or gap) and current:
            runs.append(current)
            current = []
        if v is not None:
            current.append((t, v))
        last = t
    if current:
        runs.append(current)
    return runs


def _value_step(top: float) -> float:
    raw = top / _VALUE_TICKS
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)


def _value_ticks(top: float) -> list[tuple[float, str]]:
    """Round values from 0 to `top` with their labels, a handful of them."""
    step = _value_step(top)
    decimals = max(0, -math.floor(math.log10(step)))
    count = int(top / step + 1e-9) + 1
    return [(k * step, f"{k * step:.{decimals}f} ms") for k in range(count)]


def _time_ticks(start: float, end: float) -> tuple[list[float], str]:
    span = end - start
    step = next((float(s) for s in _TIME_STEPS if span / s <= _TIME_TICKS), None)
    if step is None:
        step = math.ceil(span / _TIME_TICKS / 86400) * 86400.0
    fmt = "%H:%M" if step < 86400 else "%m-%d"
    first = math.ceil(start / step) * step
    count = int((end - first) / step + 1e-9) + 1
    ticks = [first + k * step for k in range(max(count, 0))]
    return (ticks or [start]), fmt


def _budget_text(ms: float) -> str:
    return f"{ms:g} ms"


def _legend(
    entries: Sequence[tuple[str, str]], left: float, right: float, top: float
) -> tuple[str, int]:
    """Legend entries (colour, words) flowed into rows; the markup and the number of rows."""
    parts: list[str] = []
    x, row = left, 0
    for colour, words in entries:
        advance = 26 + text_width(words) + 14
        if x > left and x + advance > right:
            x, row = left, row + 1
        y = top + row * LEGEND_ROW
        parts.append(
            f'<line x1="{_n(x)}" y1="{_n(y - 7)}" x2="{_n(x + 20)}" y2="{_n(y - 7)}" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<line x1="{_n(x)}" y1="{_n(y - 2)}" x2="{_n(x + 20)}" y2="{_n(y - 2)}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="{P95_DASH}"/>'
            f'<text x="{_n(x + 26)}" y="{_n(y)}" fill="#1b1b1b">{escape(words)}</text>'
        )
        x += advance
    return "".join(parts), (row + 1 if entries else 0)


def latency_chart(
    series: Mapping[str, Sequence[LatencyPoint]],
    *,
    start: float,
    end: float,
    budgets_ms: Sequence[float] = (5.0, 20.0, 50.0),
    width: int = 720,
    height: int = 240,
    title: str = "Latency",
) -> str:
    """p50 (solid) and p95 (dashed) latency per region over a time window, as SVG.

    The y axis is linear from 0 ms up to 1.1 times the larger of the highest value drawn and
    the largest budget: budget lines stay where a reader expects them, and one slow outlier
    squeezes the rest, which is how an outlier should look. The x axis is labelled in UTC,
    `HH:MM` (`MM-DD` once a tick is a day or more). Regions take palette colours in name order
    so a region keeps its colour from one page to the next. A None or a pause longer than 1.5
    usual buckets breaks a line; nothing is drawn across a gap. Points outside [start, end]
    are skipped. `height` is the chart's; the legend adds a 16 px row below it per line.

    Args:
        series: Region name to (bucket start, p50 ms, p95 ms) points, oldest first.
        start: Window start, epoch seconds.
        end: Window end, epoch seconds.
        budgets_ms: Latency budgets drawn as labelled dotted lines.
        width: Width in pixels.
        height: Height in pixels of the chart above the legend.
        title: The chart's accessible name and heading.

    Returns:
        SVG markup; a framed "no data" when nothing in the window has a value.
    """
    width, height = max(width, 200), max(height, 100)
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        return _no_data(width, height, title)
    regions = sorted(series)
    drawn = {r: _in_window(series[r], start, end) for r in regions}
    values = [v for pts in drawn.values() for p in pts for v in p[1:] if v is not None]
    if not values:
        return _no_data(width, height, title)
    budgets = sorted({b for b in budgets_ms if math.isfinite(b) and b > 0})
    top = max(max(values), max(budgets, default=0.0)) * 1.1 or 1.0
    ticks = _value_ticks(top)
    x0 = max(36.0, 10 + max(text_width(label) for _, label in ticks) * 10 / 11)
    x1, y0, y1 = width - 20.0, 26.0, height - 22.0

    def x(t: float) -> str:
        return _n(x0 + (t - start) / (end - start) * (x1 - x0))

    def y(ms: float) -> str:
        return _n(y1 - ms / top * (y1 - y0))

    body: list[str] = [
        f'<text x="{_n(x0)}" y="16" font-weight="bold" fill="#1b1b1b">{_text(title)}</text>'
    ]
    for value, label in ticks:
        at = y(value)
        body.append(
            f'<line x1="{_n(x0)}" y1="{at}" x2="{_n(x1)}" y2="{at}" stroke="#e3e3e3"/>'
            f'<text x="{_n(x0 - 4)}" y="{_n(float(at) + 3.5)}" text-anchor="end" '
            f'font-size="10" fill="#444">{label}</text>'
        )
    for ms in budgets:
        at = y(ms)
        body.append(
            f'<line x1="{_n(x0)}" y1="{at}" x2="{_n(x1)}" y2="{at}" stroke="#767676" '
            f'stroke-dasharray="{BUDGET_DASH}"/><text x="{_n(x1 - 2)}" y="{_n(float(at) - 3)}" '
            f'text-anchor="end" font-size="10" fill="#444">{_budget_text(ms)}</text>'
        )
    times, fmt = _time_ticks(start, end)
    for t in times:
        body.append(
            f'<line x1="{x(t)}" y1="{_n(y1)}" x2="{x(t)}" y2="{_n(y1 + 4)}" stroke="#999"/>'
            f'<text x="{x(t)}" y="{_n(y1 + 15)}" text-anchor="middle" font-size="10" '
            f'fill="#444">{_utc(t, fmt)}</text>'
        )
    body.append(
        f'<text x="{_n(x1)}" y="16" text-anchor="end" font-size="10" fill="#444">'
        "time in UTC</text>"
        f'<path d="M{_n(x0)},{_n(y0)}V{_n(y1)}H{_n(x1)}" fill="none" stroke="#999"/>'
    )
    entries: list[tuple[str, str]] = [("#444", "p50 solid / p95 dashed")]
    for i, region in enumerate(regions):
        colour = PALETTE[i % len(PALETTE)]
        name = _clean(region, MAX_LEGEND_NAME)
        has_data = any(v is not None for p in drawn[region] for v in p[1:])
        entries.append((colour, name if has_data else f"{name} (no data)"))
        for column, quantile in ((1, "p50"), (2, "p95")):
            dash = f' stroke-dasharray="{P95_DASH}"' if quantile == "p95" else ""
            # A lone point has no line to draw; p50 shows it as a dot, p95 as a ring.
            dot_fill = colour if quantile == "p50" else "#fff"
            marks = "".join(
                f'<polyline points="{" ".join(f"{x(t)},{y(v)}" for t, v in run)}"/>'
                if len(run) > 1
                else f'<circle cx="{x(run[0][0])}" cy="{y(run[0][1])}" r="2.5" '
                f'fill="{dot_fill}" stroke-dasharray="none"/>'
                for run in _runs(drawn[region], column)
            )
            body.append(
                f'<g fill="none" stroke="{colour}" stroke-width="1.8"{dash} '
                f'data-region="{_text(region)}" data-quantile="{quantile}">'
                f"<title>{_text(region)} {quantile}</title>{marks}</g>"
            )
    legend, rows = _legend(entries, x0, x1, height + 10.0)
    body.append(legend)
    desc = (
        f"p50 (solid) and p95 (dashed) latency in ms for {len(regions)} regions, "
        f"{_utc(start, '%Y-%m-%d %H:%M')} to {_utc(end, '%Y-%m-%d %H:%M')} UTC"
        + (f"; budgets {', '.join(_budget_text(b) for b in budgets)}" if budgets else "")
    )
    return _svg(width, height + rows * LEGEND_ROW + 2, title, "".join(body), desc)


# Badges


def _shadowed(centre: float, words: str, length: float) -> str:
    """Badge text over its 1px shadow, squeezed or spread to the width it was given."""
    if not words:
        return ""
    shown = escape(words)
    fit = f'textLength="{_n(length)}"'
    return (
        f'<text x="{_n(centre)}" y="15" fill="#010101" fill-opacity=".3" {fit}>{shown}</text>'
        f'<text x="{_n(centre)}" y="14" {fit}>{shown}</text>'
    )


def _badge(label: str, message: str, colour: str) -> str:
    """A shields.io "flat" two-part badge; no ids, so any number can share one page."""
    label, message = _clean(label), _clean(message)
    label_w, message_w = math.ceil(text_width(label)), math.ceil(text_width(message))
    left, right = label_w + 2 * BADGE_PAD, message_w + 2 * BADGE_PAD
    body = (
        f'<path fill="{BADGE_LABEL}" d="M3,0h{left - 3}v20h-{left - 3}a3,3 0 0 1-3-3v-14'
        'a3,3 0 0 1 3-3z"/>'
        f'<path fill="{colour}" d="M{left},0h{right - 3}a3,3 0 0 1 3,3v14a3,3 0 0 1-3,3'
        f'h-{right - 3}z"/>'
        '<g fill="#fff" text-anchor="middle">'
        f"{_shadowed(left / 2, label, label_w)}{_shadowed(left + right / 2, message, message_w)}"
        "</g>"
    )
    return _svg(left + right, BADGE_HEIGHT, f"{label}: {message}", body)


def status_badge(label: str, verdict: str) -> str:
    """A badge of a target's verdict: up, degraded or down, anything else unknown.

    Args:
        label: The left-hand text, usually the target's name; cut at 100 characters.
        verdict: The verdict word.

    Returns:
        SVG markup, 20 px high.
    """
    # The word shown is always one of ours, whatever type of string the verdict came as.
    word = next((w for w in VERDICT_COLOURS if w == verdict), "unknown")
    return _badge(label, word, VERDICT_COLOURS.get(word, NO_DATA))


def uptime_badge(label: str, availability: float | None, window: str) -> str:
    """A badge of availability over a window, such as `99.95% 30d`.

    Args:
        label: The left-hand text, usually the target's name; cut at 100 characters.
        availability: The fraction of the window up, 0..1; None when there is no data.
        window: Words for the window, such as `30d`.

    Returns:
        SVG markup, 20 px high; `no data` in grey when there is no figure.
    """
    if availability is None or not math.isfinite(availability):
        return _badge(label, "no data", NO_DATA)
    return _badge(
        label, f"{percent(availability)} {window}".strip(), availability_colour(availability)
    )


# Uptime bar


def uptime_bar(
    days: Sequence[DayCell],
    *,
    width: int = 720,
    height: int = 34,
    title: str = "Uptime, last 90 days",
) -> str:
    """One bar per day, oldest on the left, each titled with its date and availability.

    Args:
        days: (day start, availability 0..1 or None) per day.
        width: Width in pixels, shared by the days.
        height: Height in pixels.
        title: The bar's accessible name.

    Returns:
        SVG markup whose description counts the days and names the worst one.
    """
    width, height = max(width, 1), max(height, 1)
    if not days:
        return _no_data(max(width, 100), max(height, 20), title)
    cells = sorted(days, key=lambda d: d[0])
    step = width / len(cells)
    gap = 1.0 if step >= 4 else 0.0
    rects: list[str] = []
    known: list[tuple[float, float]] = []
    for i, (day, availability) in enumerate(cells):
        fraction = (
            None
            if availability is None or not math.isfinite(availability)
            else min(max(availability, 0.0), 1.0)
        )
        date = _utc(day, "%Y-%m-%d")
        said = f"{date}: no data" if fraction is None else f"{date}: {percent(fraction)} up"
        if fraction is not None:
            known.append((fraction, day))
        rects.append(
            f'<rect x="{_n(i * step)}" width="{_n(step - gap)}" height="{height}" '
            f'fill="{availability_colour(fraction)}"><title>{said}</title></rect>'
        )
    good = sum(1 for a, _ in known if a >= AVAILABILITY_COLOURS[0][0])
    desc = (
        f"{len(cells)} days: {good} at or above {percent(AVAILABILITY_COLOURS[0][0])}, "
        f"{len(known) - good} below, {len(cells) - len(known)} with no data"
    )
    if known:
        worst, when = min(known)
        desc += f"; lowest {percent(worst)} on {_utc(when, '%Y-%m-%d')}"
    return _svg(width, height, title, "".join(rects), desc)
