"""Where the text of an inline-SVG chart lands, checked without a browser.

SVG does no text layout, so a label drawn past the viewBox is simply cut off. Each ``<text>``'s
box is estimated from its font size, anchor and character count with a conservative average
glyph width (0.6 x the font size; sans-serif averages about 0.5-0.55), ascent 1 x and descent
0.25 x the font size; ``rotate(-90 x y)`` (the y-axis title) turns the box upright.
``assert_laid_out(svg)`` then asserts that every box lies inside the viewBox, that labels of
class ``inframe`` (reference lines) lie inside the plot frame (``<rect class="frame">``), that
the legend (class ``legend``) stays off the frame, and that no two boxes overlap.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

GLYPH = 0.6
_NS = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def within(self, other: Box, slack: float = 0.0) -> bool:
        return (self.x0 >= other.x0 - slack and self.y0 >= other.y0 - slack
                and self.x1 <= other.x1 + slack and self.y1 <= other.y1 + slack)

    def overlaps(self, other: Box) -> bool:
        return (self.x0 < other.x1 and other.x0 < self.x1
                and self.y0 < other.y1 and other.y0 < self.y1)


@dataclass(frozen=True)
class Text:
    text: str
    cls: str
    box: Box


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def viewbox(root: ET.Element) -> Box:
    x, y, w, h = map(float, root.attrib["viewBox"].split())
    assert (float(root.attrib["width"]), float(root.attrib["height"])) == (w, h)  # unscaled
    return Box(x, y, x + w, y + h)


def frame(root: ET.Element) -> Box:
    rect = next(r for r in root.iter(f"{_NS}rect") if r.get("class") == "frame")
    x, y = float(rect.attrib["x"]), float(rect.attrib["y"])
    return Box(x, y, x + float(rect.attrib["width"]), y + float(rect.attrib["height"]))


def texts(root: ET.Element) -> list[Text]:
    size_default = float(root.get("font-size", 16))  # the browser's default is 16 px
    out = []
    for el in root.iter(f"{_NS}text"):
        assert not list(el), "tspans are not estimated; draw one <text> per line"
        text = el.text or ""
        size = float(el.get("font-size", size_default))
        x, y = float(el.get("x", 0)), float(el.get("y", 0))
        w = GLYPH * size * len(text)
        anchor = el.get("text-anchor", "start")
        # Along the baseline: where the run starts, relative to the anchor point.
        start = {"start": 0.0, "middle": -w / 2, "end": -w}[anchor]
        transform = el.get("transform")
        if transform is None:
            box = Box(x + start, y - size, x + start + w, y + 0.25 * size)
        else:
            m = re.fullmatch(r"rotate\(-90 ([-\d.]+) ([-\d.]+)\)", transform)
            assert m and (float(m[1]), float(m[2])) == (x, y), f"unsupported {transform!r}"
            # Turned a quarter left about the anchor: the run goes up, the ascent goes left.
            box = Box(x - size, y - start - w, x + 0.25 * size, y - start)
        out.append(Text(text, el.get("class", ""), box))
    return out


def assert_laid_out(svg: str) -> list[Text]:
    """Assert the chart's text fits (see the module's docstring); returns the texts."""
    root = parse(svg)
    view, items = viewbox(root), texts(root)
    for t in items:
        assert t.box.within(view), f"{t.text!r} at {t.box} leaves the viewBox {view}"
    rects = [r for r in root.iter(f"{_NS}rect") if r.get("class") == "frame"]
    if not rects:
        return items
    plot = frame(root)
    for t in items:
        if t.cls == "inframe":
            assert t.box.within(plot), f"{t.text!r} at {t.box} leaves the plot frame {plot}"
        elif t.cls == "legend":
            assert not t.box.overlaps(plot), f"legend {t.text!r} at {t.box} covers the plot"
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            assert not a.box.overlaps(b.box), f"{a.text!r} {a.box} overlaps {b.text!r} {b.box}"
    return items
