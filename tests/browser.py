"""A report page as a real browser lays it out: Chromium, headless, offline.

``svg_layout`` estimates where text lands from character counts; this opens the page in
Debian's ``chromium`` (``apt-get install chromium``), lets it run, and reads back what the
browser measured: every ``<text>``'s box from ``getBoundingClientRect`` (in viewBox units, so
rotated axis titles are measured as drawn), the plot frame, the data marks (circles at their
centres, polylines by their points), the scripts' errors and any resource the page fetched.
``assert_laid_out_in_browser(page, folder)`` then applies ``svg_layout``'s rules to those real
boxes, plus: no console or script error, nothing fetched (the page works offline), and every
data mark inside its frame.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from svg_layout import Box, Text

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here: apt-get install chromium (Debian's package)")

# Installed before the page's own scripts: errors they raise or log are kept.
_CATCH = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message)));
const __error = console.error;
console.error = (...a) => { window.__errors.push(a.map(String).join(" ")); __error(...a); };
</script>"""

# Run after the page has loaded: what the browser laid out, written into the DOM.
_MEASURE = """<script>
window.addEventListener("load", () => {
  const box = (r, svg, vb) => {
    const s = svg.getBoundingClientRect(), k = vb.width / s.width;
    return [vb.x + (r.left - s.left) * k, vb.y + (r.top - s.top) * k,
            vb.x + (r.right - s.left) * k, vb.y + (r.bottom - s.top) * k];
  };
  const svgs = [...document.querySelectorAll("svg")].map(svg => {
    const vb = svg.viewBox.baseVal, f = svg.querySelector("rect.frame");
    const marks = [...svg.querySelectorAll("circle")].map(c => [c.cx.baseVal.value,
                                                                  c.cy.baseVal.value]);
    for (const p of svg.querySelectorAll("polyline"))
      for (const pt of p.points) marks.push([pt.x, pt.y]);
    return {viewbox: [vb.x, vb.y, vb.x + vb.width, vb.y + vb.height],
            frame: f ? [f.x.baseVal.value, f.y.baseVal.value,
                        f.x.baseVal.value + f.width.baseVal.value,
                        f.y.baseVal.value + f.height.baseVal.value] : null,
            texts: [...svg.querySelectorAll("text")].map(t => ({
              text: t.textContent, cls: t.getAttribute("class") || "",
              box: box(t.getBoundingClientRect(), svg, vb)})),
            marks};
  });
  const fetched = performance.getEntriesByType("resource").map(r => r.name);
  document.body.setAttribute("data-layout", JSON.stringify(
    {errors: window.__errors, fetched, svgs}));
});
</script>"""


def measure(page: str, folder: Path) -> dict[str, Any]:
    """Open ``page`` in headless Chromium (no network) and return what it measured."""
    assert CHROMIUM is not None
    head = re.search(r"<head[^>]*>", page)
    assert head, "the report has no <head>"
    page = page[:head.end()] + _CATCH + page[head.end():]
    page = page.replace("</body>", _MEASURE + "</body>", 1)
    path = folder / "report-in-browser.html"
    path.write_text(page, encoding="utf-8")
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # offline
         f"--user-data-dir={folder / 'chromium-profile'}", "--window-size=1280,2000",
         "--virtual-time-budget=3000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-layout="([^"]*)"', done.stdout)
    assert found, f"the page never finished loading: {done.stderr[-2000:]}"
    return dict(json.loads(html.unescape(found.group(1))))


def assert_laid_out_in_browser(page: str, folder: Path) -> list[list[Text]]:
    """``svg_layout``'s rules on the boxes Chromium measured; returns each chart's texts."""
    seen = measure(page, folder)
    assert seen["errors"] == [], seen["errors"]
    assert seen["fetched"] == [], f"the page fetched {seen['fetched']}: it must work offline"
    assert seen["svgs"], "no chart on the page"
    charts = []
    for svg in seen["svgs"]:
        view = Box(*svg["viewbox"])
        items = [Text(t["text"], t["cls"], Box(*t["box"])) for t in svg["texts"]]
        for t in items:  # half a pixel: the browser rounds glyph boxes outwards
            assert t.box.within(view, 0.5), f"{t.text!r} at {t.box} leaves the viewBox {view}"
        if svg["frame"] is not None:
            plot = Box(*svg["frame"])
            for x, y in svg["marks"]:
                assert Box(x, y, x, y).within(plot, 0.5), f"a data mark at {x, y} is off {plot}"
            for t in items:
                if t.cls == "inframe":
                    assert t.box.within(plot, 0.5), f"{t.text!r} at {t.box} leaves {plot}"
                elif t.cls == "legend":
                    assert not t.box.overlaps(plot), f"legend {t.text!r} covers the plot"
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                assert not a.box.overlaps(b.box), f"{a.text!r} {a.box} overlaps {b.text!r}"
        charts.append(items)
    return charts
