"""Tiny inline-SVG charts for self-contained HTML reports (no JavaScript, no network).

    chart = Chart("p50 latency (ms)", "accuracy", log_x=True)
    chart.series("within budget", [(3.1, 0.96), (1.2, 0.95)], color="#2a7", marker=True)
    chart.hline(0.955, "budget floor")
    svg = chart.render()

SVG has no text layout: a label is drawn where it is put, and whatever falls outside the
viewBox is cut off. So the layout is computed from the text. Each string's width is estimated
as 0.6 x font size per character (a conservative average for sans-serif, whose real average is
about 0.5-0.55), the margins are sized to the widest tick label and the wrapped axis titles,
the legend goes to the right of the plot when it fits there (at most 260 px wide and as tall as
the plot) and below it, wrapped into rows, when it does not, and the labels of reference lines
are kept inside the plot frame, clear of each other (moved to the other side of their line or
down a row when a spot is outside or taken; shortened with "…" only if wider than the frame).
Tick labels that would touch their neighbour are left out (the grid line stays).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from html import escape

__all__ = ["PALETTE", "Chart", "text_width"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_FONT = 12            # px, every label
_GLYPH = 0.6          # estimated glyph width / font size (conservative for sans-serif)
_LINE = 15            # px from one line of text to the next
_W = 640              # the chart's least width; a legend beside the plot widens it
_PW, _PH = 400, 300   # the plot frame's least width, and its height
_PAD = 8              # px kept clear inside the viewBox's edge
_TOP = 16             # px above the frame: room for the top y tick label's ascent
_SWATCH = 18          # a legend entry's colour square and the gap after it
# A reference line's label in red over a stroke of the frame's fill, readable over markers.
_HALO = ' fill="#d62728" stroke="#fafafa" stroke-width="3" paint-order="stroke"'
_RIGHT_LEGEND_MAX = 260  # px: a wider legend (long names) goes below the plot instead


def text_width(text: str, size: float = _FONT) -> float:
    """The estimated width in px of ``text`` drawn at ``size`` px: ``text_width("1000")``
    is 28.8 at 12 px."""
    return _GLYPH * size * len(text)


def _wrap(text: str, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` px (broken at spaces, long words split)."""
    chars = max(1, int(width / (_GLYPH * _FONT) + 1e-9))
    return textwrap.wrap(text, chars, break_on_hyphens=False) or [""]


def _fit(text: str, width: float) -> str:
    """``text`` shortened with "…" to at most ``width`` px."""
    chars = max(1, int(width / (_GLYPH * _FONT) + 1e-9))
    return text if len(text) <= chars else text[:chars - 1] + "…"


@dataclass
class _Series:
    name: str
    points: list[tuple[float, float]]
    color: str
    marker: bool
    line: bool
    labels: list[str] | None
    big: bool


@dataclass
class _Axis:
    """One axis: the padded range in plot space (log10 for a log axis) and its ticks."""

    log: bool
    lo: float
    hi: float
    ticks: list[float]         # in plot space
    labels: list[str]

    @classmethod
    def of(cls, values: list[float], log: bool, zero: bool = False) -> _Axis:
        fv = _log if log else float
        values = [*values, 0.0] if zero and not log else values
        lo, hi = _pad(min(fv(v) for v in values), max(fv(v) for v in values))
        ticks = _log_ticks(lo, hi) if log else _ticks(lo, hi)
        return cls(log, lo, hi, ticks, [_fmt(10 ** t if log else t) for t in ticks])

    def f(self, v: float) -> float:
        return _log(v) if self.log else v

    def frac(self, v: float) -> float:
        """Where ``v`` (data space) lies along the axis, 0 at ``lo`` and 1 at ``hi``."""
        return (self.f(v) - self.lo) / (self.hi - self.lo)


@dataclass
class Chart:
    """A scatter/line chart with linear or log axes, horizontal/vertical reference lines."""

    x_label: str
    y_label: str
    log_x: bool = False
    title: str = ""
    log_y: bool = False
    zero: bool = False  # linear axes reach down to 0 (rates, counts)
    _series: list[_Series] = field(default_factory=list)
    _hlines: list[tuple[float, str]] = field(default_factory=list)
    _vlines: list[tuple[float, str]] = field(default_factory=list)

    def series(self, name: str, points: list[tuple[float, float]], *, color: str | None = None,
               marker: bool = True, line: bool = False, labels: list[str] | None = None,
               big: bool = False) -> Chart:
        color = color or PALETTE[len(self._series) % len(PALETTE)]
        self._series.append(_Series(name, [(float(x), float(y)) for x, y in points], color,
                                    marker, line, labels, big))
        return self

    def hline(self, y: float, label: str) -> Chart:
        self._hlines.append((float(y), label))
        return self

    def vline(self, x: float, label: str) -> Chart:
        self._vlines.append((float(x), label))
        return self

    def render(self) -> str:
        xs = [x for s in self._series for x, _ in s.points] + [x for x, _ in self._vlines]
        ys = [y for s in self._series for _, y in s.points] + [y for y, _ in self._hlines]
        if not xs or not ys:
            return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="40" '
                    f'viewBox="0 0 {_W} 40" font-family="sans-serif" font-size="{_FONT}">'
                    '<text x="10" y="25">no data</text></svg>')
        ax, ay = _Axis.of(xs, self.log_x, self.zero), _Axis.of(ys, self.log_y, self.zero)
        # Left: the y title's lines, then the widest y tick label; wide enough too for half
        # of the first x tick label, which is centred on the frame's left edge at worst.
        y_title = _wrap(self.y_label, _PH)
        left = max(_PAD + _LINE * len(y_title) + 6 + max(map(text_width, ay.labels)) + 6,
                   _PAD + text_width(ax.labels[0]) / 2 if ax.labels else 0)
        legend_w = _SWATCH + max(text_width(s.name) for s in self._series) if self._series else 0
        beside = bool(self._series) and (legend_w <= _RIGHT_LEGEND_MAX
                                         and 4 + (_LINE + 3) * len(self._series) <= _PH)
        right = (text_width(ax.labels[-1]) / 2 if ax.labels else 0) + _PAD
        if beside:
            right = max(right, 12 + legend_w + _PAD)
        pw = max(_PW, _W - left - right)
        width = math.ceil(left + pw + right)
        box = _Frame(left, _TOP, pw, _PH)
        out = [f'<rect class="frame" x="{left:.1f}" y="{_TOP}" width="{pw:.1f}" height="{_PH}" '
               'fill="#fafafa" stroke="#999"/>']
        out += _grid(box, ax, ay)
        # Below the frame: x tick labels, the x title's lines centred under the frame, then
        # the legend if not beside.
        y: float = _TOP + _PH + 16
        cx = left + pw / 2
        x_title = _wrap(self.x_label, 2 * (min(cx, width - cx) - _PAD))
        out += [f'<text x="{cx:.1f}" y="{y + _LINE * (i + 1) + 2}" text-anchor="middle">'
                f'{escape(line)}</text>' for i, line in enumerate(x_title)]
        y += _LINE * len(x_title) + 2
        mid = _TOP + _PH / 2
        out += [f'<text x="{_PAD + _FONT + _LINE * i}" y="{mid}" text-anchor="middle" '
                f'transform="rotate(-90 {_PAD + _FONT + _LINE * i} {mid})">{escape(line)}</text>'
                for i, line in enumerate(y_title)]
        out += self._reference_lines(box, ax, ay)
        out += self._data(box, ax, ay)
        if beside:
            legend, _ = _legend(self._series, left + pw + 12, _TOP + 4, legend_w, 1)
        else:
            legend, y = _legend(self._series, _PAD, y + 12, width - 2 * _PAD, None)
        height = math.ceil(max(y, _TOP + _PH + 16) + _PAD)
        out += legend
        return "\n".join([
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{_FONT}" '
            f'role="img" aria-label="{escape(self.title or self.y_label)}">',
            *out, "</svg>"])

    def _reference_lines(self, box: _Frame, ax: _Axis, ay: _Axis) -> list[str]:
        """Dashed lines with their labels inside the frame (class "inframe"), each label at
        the first of its candidate spots that lies in the frame and clear of those placed:
        a horizontal line's label has four spots (either end, either side), so it goes first;
        a vertical line's label can move down a row."""
        out: list[str] = []
        placed: list[tuple[float, float, float, float]] = []
        rows = [box.y + 14 + (_FONT + 3) * k for k in range(int((box.h - 14) // (_FONT + 3)))]
        for y, label in self._hlines:
            yy = box.py(ay, y)
            text = _fit(label, box.w - 8)
            # Above the line at the right end, else below it, else the same at the left end.
            spots = [(x, ty, anchor) for x, anchor in ((box.x + box.w - 4, "end"),
                                                       (box.x + 4, "start"))
                     for ty in (yy - 4, yy + _FONT + 2)]
            out.append(f'<line x1="{box.x:.1f}" y1="{yy:.1f}" x2="{box.x + box.w:.1f}" '
                       f'y2="{yy:.1f}" stroke="#d62728" stroke-dasharray="6 4"/>')
            out.append(_place(text, spots, box, placed))
        for x, label in self._vlines:
            xx = box.px(ax, x)
            text = _fit(label, box.w - 8)
            # Right of the line, else left of it, at the top, a row lower where taken.
            spots = [(xx + 4, y, "start") for y in rows] + [(xx - 4, y, "end") for y in rows]
            out.append(f'<line x1="{xx:.1f}" y1="{box.y}" x2="{xx:.1f}" y2="{box.y + box.h}" '
                       'stroke="#d62728" stroke-dasharray="6 4"/>')
            out.append(_place(text, [*spots, (box.x + 4, rows[0], "start")], box, placed))
        return out

    def _data(self, box: _Frame, ax: _Axis, ay: _Axis) -> list[str]:
        out = []
        for s in self._series:
            pts = [(box.px(ax, x), box.py(ay, y)) for x, y in s.points]
            if s.line and len(pts) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" '
                           'stroke-width="2"/>')
            if s.marker:
                r = 7 if s.big else 4.5
                for j, (x, y) in enumerate(pts):
                    tip = f"<title>{escape(s.labels[j])}</title>" if s.labels else ""
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{s.color}" '
                               f'fill-opacity="0.8" stroke="#333">{tip}</circle>')
        return out


@dataclass
class _Frame:
    """The plot frame in px, and where a data value falls in it."""

    x: float
    y: float
    w: float
    h: float

    def px(self, axis: _Axis, v: float) -> float:
        return self.x + axis.frac(v) * self.w

    def py(self, axis: _Axis, v: float) -> float:
        return self.y + (1 - axis.frac(v)) * self.h


def _text_box(text: str, x: float, y: float, anchor: str) -> tuple[float, float, float, float]:
    """The estimated box (x0, y0, x1, y1) of ``text`` with its baseline's anchor at (x, y)."""
    w = text_width(text)
    x0 = x - {"start": 0, "middle": w / 2, "end": w}[anchor]
    return x0, y - _FONT, x0 + w, y + 0.25 * _FONT


def _place(text: str, spots: list[tuple[float, float, str]], box: _Frame,
           placed: list[tuple[float, float, float, float]]) -> str:
    """``text`` at the first spot inside ``box`` that overlaps nothing in ``placed`` (else
    at the first inside, else the last spot), as an in-frame ``<text>``; adds it to ``placed``."""
    def fits(b: tuple[float, float, float, float]) -> bool:
        return (b[0] >= box.x + 2 and b[2] <= box.x + box.w - 2 and b[1] >= box.y + 2
                and b[3] <= box.y + box.h - 2)

    def clear(b: tuple[float, float, float, float]) -> bool:
        return not any(b[0] < p[2] and p[0] < b[2] and b[1] < p[3] and p[1] < b[3]
                       for p in placed)

    boxes = [(spot, _text_box(text, *spot)) for spot in spots]
    (x, y, anchor), b = next((sb for sb in boxes if fits(sb[1]) and clear(sb[1])),
                             next((sb for sb in boxes if fits(sb[1])), boxes[-1]))
    placed.append(b)
    return (f'<text class="inframe" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{_HALO}>'
            f'{escape(text)}</text>')


def _grid(box: _Frame, ax: _Axis, ay: _Axis) -> list[str]:
    """Grid lines and tick labels; an x tick label that would touch the previous one is left
    out (its grid line stays)."""
    out, last = [], -math.inf
    for t, label in zip(ax.ticks, ax.labels, strict=True):
        x = box.x + (t - ax.lo) / (ax.hi - ax.lo) * box.w
        out.append(f'<line x1="{x:.1f}" y1="{box.y}" x2="{x:.1f}" y2="{box.y + box.h}" '
                   'stroke="#e3e3e3"/>')
        if x - text_width(label) / 2 >= last + 6:
            out.append(f'<text x="{x:.1f}" y="{box.y + box.h + 16}" text-anchor="middle">'
                       f'{escape(label)}</text>')
            last = x + text_width(label) / 2
    last = math.inf
    for t, label in zip(ay.ticks, ay.labels, strict=True):
        y = box.y + (1 - (t - ay.lo) / (ay.hi - ay.lo)) * box.h
        out.append(f'<line x1="{box.x:.1f}" y1="{y:.1f}" x2="{box.x + box.w:.1f}" '
                   f'y2="{y:.1f}" stroke="#e3e3e3"/>')
        if y + 4 <= last - _FONT:  # bottom to top: room above the previous label
            out.append(f'<text x="{box.x - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{escape(label)}</text>')
            last = y + 4
    return out


def _legend(series: list[_Series], x0: float, y0: float, width: float,
            columns: int | None) -> tuple[list[str], float]:
    """Legend entries (class "legend") flowed left to right into rows within ``width`` px
    from (x0, y0), or one per row when ``columns`` is 1; long names wrap onto more lines.
    Returns the elements and the y just below the last row."""
    out: list[str] = []
    x, y, row_h = x0, y0, 0.0
    for s in series:
        lines = _wrap(s.name, width - _SWATCH)
        w = _SWATCH + max(map(text_width, lines))
        if x > x0 and (columns == 1 or x + w > x0 + width):
            x, y, row_h = x0, y + row_h + 3, 0.0
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="12" fill="{s.color}"/>')
        out += [f'<text class="legend" x="{x + _SWATCH:.1f}" y="{y + 10 + _LINE * i:.1f}">'
                f'{escape(line)}</text>' for i, line in enumerate(lines)]
        x += w + 16
        row_h = max(row_h, _LINE * len(lines))
    return out, y + row_h


def _log(v: float) -> float:
    return math.log10(max(v, 1e-9))


def _pad(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-12:
        return lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    span = hi - lo
    return lo - 0.06 * span, hi + 0.06 * span


def _ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round-numbered ticks inside [lo, hi]: steps of 1, 2 or 5 x 10^k."""
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """log10 positions of 1, 2, 5 x 10^k inside [lo, hi] (decades only when that is many)."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    for mantissas in ((1, 2, 5), (1,)):
        ticks = [math.log10(m) + k for k in decades for m in mantissas
                 if lo <= math.log10(m) + k <= hi]
        if len(ticks) <= 9:
            return ticks
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.4g}"
