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

from rtinfer._svg import Chart

__all__ = ["LOAD_KINDS", "flatten_runs", "load_report"]

LOAD_KINDS = ("loadgen", "loadgen-sweep")


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
    """A line chart as inline SVG (``rtinfer._svg``); log axes where latencies span decades."""
    series = {k: [p for p in s if p[0] is not None and p[1] is not None]
              for k, s in series.items()}
    if not any(series.values()):
        return "<p>no data</p>"
    chart = Chart(xlabel, ylabel, log_x=logx, log_y=logy, zero=True)
    for name, points in series.items():
        chart.series(name, points, marker=markers, line=True)
    if hline:
        chart.hline(hline, f"objective {_n(hline)} ms")
    if vline:
        chart.vline(vline, f"objective {_n(vline)} ms")
    return chart.render()


def _n(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"


def _e(text: Any) -> str:
    return html.escape(str(text))
