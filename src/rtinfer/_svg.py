"""Tiny inline-SVG charts for self-contained HTML reports (no JavaScript, no network).

    chart = Chart("p50 latency (ms)", "accuracy", log_x=True)
    chart.series("within budget", [(3.1, 0.96), (1.2, 0.95)], color="#2a7", marker=True)
    chart.hline(0.955, "budget floor")
    svg = chart.render()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

__all__ = ["PALETTE", "Chart"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
_W, _H = 640, 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 170, 20, 50   # margins; the right one holds the legend


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
class Chart:
    """A scatter/line chart with linear or log axes, horizontal/vertical reference lines."""

    x_label: str
    y_label: str
    log_x: bool = False
    title: str = ""
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
            return f'<svg width="{_W}" height="60"><text x="10" y="30">no data</text></svg>'
        fx = math.log10 if self.log_x else (lambda v: v)
        x0, x1 = _pad(min(fx(max(x, 1e-9)) for x in xs), max(fx(max(x, 1e-9)) for x in xs))
        y0, y1 = _pad(min(ys), max(ys))
        pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

        def px(x: float) -> float:
            return _LEFT + (fx(max(x, 1e-9)) - x0) / (x1 - x0) * pw

        def py(y: float) -> float:
            return _TOP + (1 - (y - y0) / (y1 - y0)) * ph

        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
               f'font-family="sans-serif" font-size="12" role="img" '
               f'aria-label="{escape(self.title or self.y_label)}">',
               f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="#fafafa" '
               'stroke="#999"/>']
        for t in (_log_ticks(x0, x1) if self.log_x else _ticks(x0, x1)):
            value = 10 ** t if self.log_x else t
            x = _LEFT + (t - x0) / (x1 - x0) * pw
            out.append(f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + ph}" '
                       'stroke="#e3e3e3"/>')
            out.append(f'<text x="{x:.1f}" y="{_TOP + ph + 16}" text-anchor="middle">'
                       f'{_fmt(value)}</text>')
        for t in _ticks(y0, y1):
            y = py(t)
            out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + pw}" y2="{y:.1f}" '
                       'stroke="#e3e3e3"/>')
            out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}'
                       '</text>')
        out.append(f'<text x="{_LEFT + pw / 2}" y="{_H - 12}" text-anchor="middle">'
                   f'{escape(self.x_label)}</text>')
        out.append(f'<text transform="translate(16 {_TOP + ph / 2}) rotate(-90)" '
                   f'text-anchor="middle">{escape(self.y_label)}</text>')
        for y, label in self._hlines:
            out.append(f'<line x1="{_LEFT}" y1="{py(y):.1f}" x2="{_LEFT + pw}" y2="{py(y):.1f}" '
                       'stroke="#d62728" stroke-dasharray="6 4"/>')
            out.append(f'<text x="{_LEFT + pw - 4}" y="{py(y) - 4:.1f}" text-anchor="end" '
                       f'fill="#d62728">{escape(label)}</text>')
        for x, label in self._vlines:
            out.append(f'<line x1="{px(x):.1f}" y1="{_TOP}" x2="{px(x):.1f}" y2="{_TOP + ph}" '
                       'stroke="#d62728" stroke-dasharray="6 4"/>')
            out.append(f'<text x="{px(x) + 4:.1f}" y="{_TOP + 14}" fill="#d62728">'
                       f'{escape(label)}</text>')
        for i, s in enumerate(self._series):
            pts = [(px(x), py(y)) for x, y in s.points]
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
            ly = _TOP + 14 + 18 * i
            out.append(f'<rect x="{_W - _RIGHT + 12}" y="{ly - 9}" width="12" height="12" '
                       f'fill="{s.color}"/><text x="{_W - _RIGHT + 30}" y="{ly + 1}">'
                       f'{escape(s.name)}</text>')
        out.append("</svg>")
        return "\n".join(out)


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
