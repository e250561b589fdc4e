"""A self-contained HTML report from load-test result files (no scripts, no network).

    html = load_report([json.load(open(p)) for p in paths])
    Path("report.html").write_text(html)

Plots are inline SVG drawn here: throughput against p99 (each run a point, runs of one series
joined), p99 against offered load with the objective as a line, and the latency CDF of each
run. A table gives every run's load, percentiles with n, validity, CPU and memory, warnings
and where the logs are. Results of a sweep contribute all their runs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["LOAD_KINDS", "flatten_runs", "load_report"]

LOAD_KINDS = ("loadgen", "loadgen-sweep")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_W, _H, _M = 560, 320, 52  # plot width, height, margin (px)


def flatten_runs(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every single LoadGen run in ``results`` (sweeps expanded), in order."""
    runs = []
    for r in results:
        kind = r.get("kind")
        if kind == "loadgen":
            runs.append(r)
        elif kind == "loadgen-sweep":
            runs.extend(r.get("runs", []))
        else:
            raise ValueError(f"not a load-test result (kind {kind!r}); expected {LOAD_KINDS}")
    return runs


def load_report(results: Sequence[dict[str, Any]], title: str = "rtinfer load test") -> str:
    """The whole HTML page for ``results`` (each a ``loadgen`` or ``loadgen-sweep`` dict)."""
    runs = flatten_runs(results)
    if not runs:
        raise ValueError("no runs to report")
    series = _series(runs)
    slos = {r["objective"]["p99_ms"] for r in runs if r.get("objective", {}).get("p99_ms")}
    slo = min(slos) if slos else None
    # One point per run, joined in order of offered load (throughput for closed-loop runs).
    tput = {name: [(r["latency_ms"]["p99"], r["throughput"]["samples_per_s"])
                   for r in sorted(rs, key=_offered) if r.get("latency_ms")]
            for name, rs in series.items()}
    offered = {name: sorted((r["load"]["qps"], r["latency_ms"]["p99"]) for r in rs
                            if r["load"]["scenario"] == "server" and r.get("latency_ms"))
               for name, rs in series.items()}
    # One curve per series: its highest load that was VALID (else its lightest run).
    shown = [_representative(rs) for rs in list(series.values())[:10]]
    cdf = {r["label"]: [(p[1], p[0] / 100) for p in r["cdf_ms"]] for r in shown
           if r.get("cdf_ms")}
    parts = [
        f"<h1>{_e(title)}</h1>",
        _provenance(runs),
        "<h2>Throughput against p99 latency</h2>",
        _plot({k: v for k, v in tput.items() if v}, "p99 latency (ms)",
              "throughput (samples/s)", vline=slo, logx=True),
        "<h2>p99 latency against offered load (server scenario)</h2>",
        _plot({k: v for k, v in offered.items() if v}, "offered load (QPS)", "p99 latency (ms)",
              hline=slo, logy=True) if any(offered.values()) else "<p>no server runs</p>",
        "<h2>Latency CDF (per series: its highest VALID load)</h2>",
        _plot(cdf, "latency (ms, from scheduled issue time)", "fraction of samples",
              vline=slo, logx=True, markers=False),
        "<h2>Runs</h2>",
        _table(runs),
        _best(results),
    ]
    style = ("body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}th{background:#f3f3f3}.bad{color:#b00}.ok{color:#070}"
             "svg{background:#fff;border:1px solid #ddd}.warn{color:#a60}"
             "td:last-child{min-width:28em;text-align:left;font-size:12px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def _series(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r.get("series") or r["label"], []).append(r)
    return out


def _representative(runs: list[dict[str, Any]]) -> dict[str, Any]:
    valid = [r for r in runs if r.get("valid")]
    return max(valid, key=_offered) if valid else min(runs, key=_offered)


def _offered(run: dict[str, Any]) -> float:
    return float(run["load"].get("qps") or run["throughput"].get("samples_per_s") or 0)


def _provenance(runs: list[dict[str, Any]]) -> str:
    envs = {}
    for r in runs:
        env = r.get("environment") or {}
        cpu = env.get("cpu", {})
        key = (cpu.get("model"), cpu.get("usable_cores"))
        envs[key] = (f"{cpu.get('model')} ({cpu.get('usable_cores')} usable cores; "
                     f"{', '.join(cpu.get('flags', []))}); "
                     + ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items())
                                 if v))
    est = next((r["latency_ms"]["estimator"] for r in runs if r.get("latency_ms")), "")
    items = "".join(f"<li>{_e(v)}</li>" for v in envs.values())
    note = ("" if len(envs) <= 1 else "<p class='warn'>These runs come from different "
            "machines: compare ratios measured side by side only.</p>")
    gens = sorted({r["load"].get("generator", "MLPerf LoadGen") for r in runs})
    return (f"<p>Load generated by {_e(', '.join(gens))}; latency counted from each query's "
            f"scheduled issue time; percentiles: {_e(est)}.</p><ul>{items}</ul>{note}")


def _table(runs: list[dict[str, Any]]) -> str:
    head = ("run", "scenario", "offered QPS", "samples/s", "p50 ms", "p90 ms", "p99 ms",
            "p99.9 ms", "n", "objective ms", "validity", "client CPU %", "target CPU %",
            "target peak RSS MiB", "warnings / reasons")
    rows = []
    for r in runs:
        lat = r.get("latency_ms") or {}
        res = r.get("resources", {})
        ok = r.get("valid")
        notes = [*r.get("invalid_reasons", []), *r.get("warnings", [])]
        rss = res.get("target", {}).get("peak_rss_bytes")
        cells = [r["label"], r["load"]["scenario"], _n(r["load"].get("qps")),
                 _n(r["throughput"].get("samples_per_s")), _n(lat.get("p50")),
                 _n(lat.get("p90")), _n(lat.get("p99")), _n(lat.get("p99_9")),
                 str(lat.get("n", "")), _n(r.get("objective", {}).get("p99_ms")),
                 f"<span class='{'ok' if ok else 'bad'}'>{r['validity']}</span>",
                 _n(res.get("client", {}).get("cpu_percent")),
                 _n(res.get("target", {}).get("cpu_percent")),
                 _n(rss / 2**20 if rss else None), "; ".join(notes)]
        rows.append("<tr>" + "".join(f"<td>{c if i == 10 else _e(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table><p>Logs: " + _e(", ".join(sorted({str(r['logs']['dir'])
                                                                 for r in runs}))) + "</p>")


def _best(results: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in results:
        if r.get("kind") == "loadgen-sweep":
            best = r.get("best")
            text = (f"best: {best['name']} at {best['qps']:g} QPS, p99 {best['p99_ms']:.2f} ms"
                    if best else "no configuration met the objective")
            out.append(f"<h2>Sweep: {_e(r['label'])}</h2><p>{_e(text)} (objective p99 ≤ "
                       f"{r['objective']['p99_ms']} ms; {_e(r['method'])})</p>")
    return "".join(out)


def _plot(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, *,
          hline: float | None = None, vline: float | None = None, logx: bool = False,
          logy: bool = False, markers: bool = True) -> str:
    """A line chart as inline SVG; log axes where latencies span decades."""
    pts = [p for s in series.values() for p in s if p[0] is not None and p[1] is not None]
    if not pts:
        return "<p>no data</p>"
    xs = [p[0] for p in pts] + ([vline] if vline else [])
    ys = [p[1] for p in pts] + ([hline] if hline else [])
    fx, x0, x1 = _axis(xs, logx)
    fy, y0, y1 = _axis(ys, logy)

    def px(x: float) -> float:
        return _M + (fx(x) - x0) / (x1 - x0 or 1) * (_W - 2 * _M)

    def py(y: float) -> float:
        return _H - _M - (fy(y) - y0) / (y1 - y0 or 1) * (_H - 2 * _M)

    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W + 380}' height='{_H}'>",
           f"<rect x='{_M}' y='{_M}' width='{_W - 2 * _M}' height='{_H - 2 * _M}' "
           "fill='none' stroke='#888'/>"]
    for t in _ticks(x0, x1, logx):
        svg.append(f"<text x='{px(t):.1f}' y='{_H - _M + 16}' font-size='11' "
                   f"text-anchor='middle'>{_n(t)}</text>")
    for t in _ticks(y0, y1, logy):
        svg.append(f"<text x='{_M - 5}' y='{py(t) + 4:.1f}' font-size='11' "
                   f"text-anchor='end'>{_n(t)}</text>")
    svg.append(f"<text x='{_W / 2}' y='{_H - 10}' font-size='12' text-anchor='middle'>"
               f"{_e(xlabel)}</text><text x='14' y='{_H / 2}' font-size='12' "
               f"transform='rotate(-90 14 {_H / 2})' text-anchor='middle'>{_e(ylabel)}</text>")
    if hline:
        svg.append(f"<line x1='{_M}' x2='{_W - _M}' y1='{py(hline):.1f}' y2='{py(hline):.1f}' "
                   f"stroke='#b00' stroke-dasharray='5,4'/><text x='{_W - _M - 4}' "
                   f"y='{py(hline) - 4:.1f}' font-size='11' fill='#b00' text-anchor='end'>"
                   f"objective {_n(hline)} ms</text>")
    if vline:
        svg.append(f"<line y1='{_M}' y2='{_H - _M}' x1='{px(vline):.1f}' x2='{px(vline):.1f}' "
                   f"stroke='#b00' stroke-dasharray='5,4'/><text x='{px(vline) + 4:.1f}' "
                   f"y='{_M + 12}' font-size='11' fill='#b00'>objective {_n(vline)} ms</text>")
    for k, (name, s) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s)
        svg.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        if markers:
            svg.extend(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3.5' fill='{color}'/>"
                       for x, y in s)
        svg.append(f"<rect x='{_W + 4}' y='{_M + 18 * k - 9}' width='12' height='12' "
                   f"fill='{color}'/><text x='{_W + 20}' y='{_M + 18 * k + 1}' "
                   f"font-size='11'>{_e(name[:64])}</text>")
    svg.append("</svg>")
    return "".join(svg)


def _axis(values: list[float], log: bool) -> tuple[Any, float, float]:
    if log and min(values) > 0:
        lo, hi = math.log10(min(values)), math.log10(max(values))
        pad = max((hi - lo) * 0.05, 0.05)
        return math.log10, lo - pad, hi + pad
    lo, hi = min(0.0, min(values)), max(values)
    return (lambda v: v), lo, hi * 1.05 if hi > 0 else 1.0


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:  # 1-2-5 steps when the axis spans under two decades, else powers of ten
        steps = (1, 2, 5) if hi - lo < 2 else (1,)
        ticks = [m * 10.0 ** e for e in range(math.floor(lo), math.ceil(hi) + 1)
                 for m in steps if lo <= math.log10(m * 10.0 ** e) <= hi]
        return ticks or [10 ** lo, 10 ** hi]
    step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= 6)
    return [i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def _n(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"


def _e(text: Any) -> str:
    return html.escape(str(text))
