"""The optimize report: one self-contained HTML file (inline SVG, no scripts, opens offline).

Sections: the verdict; accuracy against latency with the Pareto front and the budget line;
the candidate table (recipe, accuracy, fidelity, p50/p99, throughput, size); latency CDFs of
the original and the chosen model from the final interleaved rounds; the sensitivity ranking
when mixed precision ran; the machine and library versions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

from rtinfer._svg import Chart
from rtinfer.bench.inprocess import SCHEMA
from rtinfer.hardware import environment
from rtinfer.models.imported import ImportedModel
from rtinfer.optimize.evaluate import Budget
from rtinfer.optimize.pipeline import ROUNDS
from rtinfer.optimize.state import SearchState
from rtinfer.optimize.variants import Variant

__all__ = ["pareto", "render_html", "search_result"]

_CSS = """
body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.chosen{background:#e8f6e8;font-weight:bold}tr.over{color:#a33}
.verdict{background:#f6f8ff;border:1px solid #cfd8f3;padding:10px 14px}
.small{color:#666;font-size:12px}
"""


def render_html(result: Mapping[str, Any]) -> str:
    """The report for an ``optimize`` result dict (as returned or saved as JSON)."""
    if result.get("kind") != "optimize":
        raise ValueError(f"not an optimize result (kind={result.get('kind')!r}); "
                         "rtinfer report renders optimize and bench results")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>rtinfer optimize: "
             f"{escape(_model_name(result))}</title><style>{_CSS}</style></head><body>",
             f"<h1>rtinfer optimize — {escape(_model_name(result))}</h1>",
             _verdict(result),
             "<h2>Accuracy against latency</h2>", _pareto_chart(result),
             "<p class='small'>Each point is a candidate (variant on an engine) at batch "
             f"{result['batch']}, {result['threads']} thread(s); latency is the quick "
             "measurement (final rounds where measured). The line joins the Pareto front: "
             "candidates no other beats on both latency and the budget metric.</p>",
             "<h2>Candidates</h2>", _table(result),
             "<h2>Latency distribution: original and chosen</h2>", _cdf_chart(result),
             _sensitivity(result.get("sensitivity", []), result.get("kept_in_float", [])),
             "<h2>Machine</h2>", _machine(result.get("environment", {})),
             "</body></html>"]
    return "\n".join(parts)


def _model_name(result: Mapping[str, Any]) -> str:
    kit = result["model"].get("kit")
    return f"kit {kit}" if kit else str(result["model"]["source"]["description"])


def _metric_value(result: Mapping[str, Any], row: Mapping[str, Any]) -> float:
    """The budget metric's value for a candidate: the float value minus its drop."""
    base = result["float_metrics"].get(result["budget"]["metric"], 1.0)
    return float(base - row["validation"]["drop"])


def _latency(row: Mapping[str, Any]) -> float | None:
    if row.get("final"):
        return float(row["final"]["latency_ms"]["p50"])
    quick = row.get("quick") or {}
    return float(quick["p50_ms"]) if "p50_ms" in quick else None


def _verdict(result: Mapping[str, Any]) -> str:
    c = result["chosen"]
    held = result.get("held_out", {})
    lines = [f"<b>Chosen:</b> {escape(c['variant'])} on {escape(c['engine'])} — "
             f"{escape(c['why'])}.",
             f"<b>Budget:</b> {escape(result['budget']['text'])} (judged on the validation "
             "split; the held-out test split is reported below, not used to choose)."]
    speed = [f"{c['speedup_vs_original_ort']:.2f}x vs the original on ONNX Runtime"]
    if "speedup_vs_torch_eager" in c:
        speed.append(f"{c['speedup_vs_torch_eager']:.2f}x vs PyTorch eager")
    lines.append(f"<b>Speed:</b> p50 {c['latency_ms']['p50']:.3f} ms, p99 "
                 f"{c['latency_ms']['p99']:.3f} ms at batch {result['batch']}; "
                 + ", ".join(speed) + " (median of per-round p50 ratios).")
    if "original" in held:
        metrics = ", ".join(f"{k} {held['original'][k]:.4f} → {held['chosen'][k]:.4f}"
                            for k in held["original"])
        lines.append(f"<b>Held-out test ({held['samples']} samples):</b> {escape(metrics)}")
    for out, fid in held.get("fidelity", {}).items():
        lines.append(f"<b>Fidelity of {escape(out)}:</b> worst cosine "
                     f"{fid['cosine_min']:.4f}, SQNR {fid['sqnr_db']:.1f} dB"
                     + (f", top-1 agreement {fid['top1_agreement']:.4f}"
                        if "top1_agreement" in fid else ""))
    if "budget" in held:
        lines.append("<b>The budget's limits on the held-out split:</b> " + escape("; ".join(
            f"{c['metric']} {c['original']:.4f} → {c['value']:.4f} "
            f"({'holds' if c['ok'] else 'BROKEN'})" for c in held["budget"]["checks"])))
    beyond = held.get("beyond_split")
    if beyond:
        agree = (f"; top-1 agreement {beyond['agreement']:.4f}" if "agreement" in beyond
                 else "")
        lines.append(f"<b>Beyond the split ({escape(beyond['what'])}; never used to "
                     "choose):</b> " + escape(", ".join(
                         f"{k} {beyond['original'][k]:.4f} → {beyond['candidate'][k]:.4f}"
                         for k in beyond["original"]) + agree).lstrip("; "))
    if result.get("slo_p99_ms"):
        lines.append(f"<b>p99 objective:</b> {result['slo_p99_ms']:g} ms — "
                     + ("met" if c["meets_slo"] else "not met by any candidate"))
    if result.get("skipped"):
        lines.append("<b>Not tried:</b> " + escape("; ".join(
            f"{s['variant']} ({s['why']})" for s in result["skipped"])))
    lines.append(f"<span class='small'>search took {result['elapsed_s']:.0f} s of a "
                 f"{result['time_budget_s']:.0f} s budget</span>")
    return "<div class='verdict'>" + "<br>".join(lines) + "</div>"


def _pareto_chart(result: Mapping[str, Any]) -> str:
    rows = [r for r in result["candidates"] if _latency(r) is not None]
    chart = Chart("p50 latency (ms, log scale)", result["budget"]["metric"], log_x=True,
                  title="accuracy against latency")
    within = [r for r in rows if r["validation"]["within_budget"] and not r["chosen"]]
    over = [r for r in rows if not r["validation"]["within_budget"]]
    front = sorted((r for r in rows if r["id"] in result["pareto"]), key=_latency)  # type: ignore[arg-type]
    for name, group, color in (("within budget", within, "#2ca02c"),
                               ("over budget", over, "#d62728")):
        chart.series(name, [(_latency(r), _metric_value(result, r)) for r in group],  # type: ignore[misc]
                     color=color, labels=[r["id"] for r in group])
    chart.series("Pareto front", [(_latency(r), _metric_value(result, r)) for r in front],  # type: ignore[misc]
                 color="#888", marker=False, line=True)
    chosen = [r for r in rows if r["chosen"]]
    chart.series("chosen", [(_latency(r), _metric_value(result, r)) for r in chosen],  # type: ignore[misc]
                 color="#1f77b4", big=True, labels=[r["id"] for r in chosen])
    base = result["float_metrics"].get(result["budget"]["metric"], 1.0)
    if result["budget"].get("max_drop") is not None:  # the charted metric has a limit
        drop = result["budget"]["max_drop"] * (
            abs(base) if result["budget"]["kind"] == "relative" else 1)
        chart.hline(base - drop, "budget floor")
    if result.get("slo_p99_ms"):
        chart.vline(result["slo_p99_ms"], "p99 objective")
    return chart.render()


def _table(result: Mapping[str, Any]) -> str:
    head = ("candidate", "recipe", result["budget"]["metric"], "drop", "worst cosine",
            "limits broken", "p50 ms", "p99 ms", "samples/s", "speedup vs original ORT", "size")
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for r in result["candidates"]:
        fin, quick = r.get("final"), r.get("quick") or {}
        lat = fin["latency_ms"] if fin else None
        p50 = lat["p50"] if lat else quick.get("p50_ms")
        p99 = lat["p99"] if lat else quick.get("p99_ms")
        sps = fin["samples_per_s"] if fin else quick.get("samples_per_s")
        cos = min((f["cosine_min"] for f in r["validation"]["fidelity"].values()), default=None)
        cls = "chosen" if r["chosen"] else ("over" if not r["validation"]["within_budget"]
                                            else "")
        recipe = " → ".join(_pass(p) for p in r["recipe"]) or "none (original)"
        cells = [escape(r["id"]), escape(recipe), _num(_metric_value(result, r), 4),
                 _num(r["validation"]["drop"], 4), _num(cos, 4),
                 escape(", ".join(r["validation"].get("excluded_by", [])) or "none"),
                 _num(p50, 3), _num(p99, 3),
                 _num(sps, 1), _num(fin["speedup_vs_original_ort"], 2) + "x" if fin else "-",
                 f"{r['size_bytes'] / 2**20:.2f} MiB"]
        out.append(f"<tr class='{cls}'>" + "".join(
            f"<td class='n'>{c}</td>" if i > 1 else f"<td>{c}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    out.append("</table><p class='small'>" + escape(result["measurement"]["final"]) + "; "
               "percentiles: numpy linear (Hyndman-Fan type 7); rows in red are over the "
               "budget and never chosen.</p>")
    return "\n".join(out)


def _pass(p: Mapping[str, Any]) -> str:
    if p.get("pass") == "quantize":
        return f"quantize({p.get('method')}, {p.get('engine')}, {p.get('calibration')}" + (
            f", {p['preset']} preset" if p.get("preset", "default") != "default" else "") + (
            ", kernel inputs only" if p.get("compute_inputs_only") else "") + (
            f", {len(p['exclude'])} float" if p.get("exclude") else "") + ")"
    if p.get("pass") == "distill":
        return (f"distill(layers x{p.get('layers')}, FFN width x{p.get('width')}, "
                f"{p.get('steps')}+{p.get('finetune_steps')} steps)")
    if p.get("pass") == "prune":
        kind = "structured" if p.get("structured") else "unstructured"
        return f"prune({kind}, {p.get('method')}, amount {p.get('amount')})"
    return str(p.get("pass", "?"))


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _cdf_chart(result: Mapping[str, Any]) -> str:
    chart = Chart("latency (ms, log scale)", "fraction of requests ≤ latency", log_x=True,
                  title="latency CDF")
    samples = dict(result["latency_samples_ms"])
    same = result["chosen"]["variant"] == "fp32" and (
        result["chosen"]["engine"] == result["original_engine"])
    if same:  # the original won: one curve, named as both
        samples = {"original = chosen": samples["original"]}
    for name, values in samples.items():
        xs = np.sort(np.asarray(values, dtype=np.float64))
        if xs.size == 0:
            continue
        idx = np.unique(np.linspace(0, xs.size - 1, min(300, xs.size)).astype(int))
        engine = result["chosen"]["engine"] if name == "chosen" else result["original_engine"]
        chart.series(f"{name} ({engine})", [(xs[i], (i + 1) / xs.size) for i in idx],
                     marker=False, line=True)
    return chart.render()


def _sensitivity(rows: Sequence[Mapping[str, Any]], kept: Sequence[str]) -> str:
    if not rows:
        return ""
    out = ["<h2>Sensitivity ranking</h2><p class='small'>Harm when only this layer is "
           "quantized (1 - mean cosine on the samples where float and int8 disagree most); "
           f"kept in float: {len(kept)} layer(s).</p><table><tr><th>layer</th><th>harm</th>"
           "<th>worst cosine</th><th>kept in float</th></tr>"]
    for r in rows[:20]:
        out.append(f"<tr><td>{escape(str(r['node']))}</td><td class='n'>{r['harm']:.2e}</td>"
                   f"<td class='n'>{r['cosine_min']:.4f}</td><td>"
                   f"{'yes' if r['node'] in kept else ''}</td></tr>")
    return "\n".join(out) + "</table>"


def _machine(env: Mapping[str, Any]) -> str:
    cpu = env.get("cpu", {})
    rows = [("CPU", f"{cpu.get('model', '?')} ({cpu.get('usable_cores', '?')} usable cores; "
             f"{', '.join(cpu.get('flags', []))})")]
    rows += [("memory", f"{env.get('memory_bytes', 0) / 2**30:.1f} GiB"),
             ("GPUs", ", ".join(env.get("gpus", [])) or "none"), ("OS", str(env.get("os")))]
    rows += [(k, str(v)) for k, v in sorted(env.get("versions", {}).items())]
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def search_result(original: ImportedModel, kit: str | None, budget: Budget, goal: str,
                  batch: int, threads: int, slo: float | None,
                  float_metrics: Mapping[str, float], variants: Mapping[str, Variant],
                  records: Mapping[str, dict[str, Any]],
                  final: Mapping[tuple[str, str], dict[str, Any]], chosen: dict[str, Any],
                  skipped: list[dict[str, str]], state: SearchState, time_budget_s: float,
                  start: float) -> dict[str, Any]:
    """The JSON-ready result of a search (``kind: optimize``): every candidate row, the Pareto
    front, the choice with its final figures, what was skipped and why."""
    rows = []
    for vid, rec in records.items():
        v = variants[vid]
        engines = rec["quick"] or {"-": {}}
        for engine, quick in engines.items():
            fin = final.get((vid, engine))
            rows.append({
                "id": f"{vid}@{engine}", "variant": vid, "label": v.label, "engine": engine,
                "recipe": v.recipe, "size_bytes": v.model.size_bytes,
                "validation": rec["validation"], "quick": quick,
                "final": {k: x for k, x in fin.items() if k != "samples_ms"} if fin else None,
                "chosen": (vid, engine) == (chosen["variant"], chosen["engine"]),
            })
    chosen_id = f"{chosen['variant']}@{chosen['engine']}"
    orig_key = ("fp32", chosen["original_engine"])
    return {
        "schema": SCHEMA, "kind": "optimize",
        "model": {"source": original.source.to_dict(), "kit": kit,
                  "size_bytes": original.size_bytes},
        "budget": budget.to_dict(),
        "goal": goal, "batch": batch, "threads": threads, "slo_p99_ms": slo,
        "float_metrics": dict(float_metrics),
        "candidates": rows,
        "pareto": pareto(rows),
        "chosen": {**chosen, "id": chosen_id,
                   **{k: v for k, v in final[(chosen["variant"], chosen["engine"])].items()
                      if k != "samples_ms"}},
        "latency_samples_ms": {"original": final[orig_key]["samples_ms"],
                               "chosen": final[(chosen["variant"], chosen["engine"])][
                                   "samples_ms"]},
        "original_engine": orig_key[1],
        "skipped": skipped,
        "sensitivity": state.extra.get("sensitivity", []),
        "kept_in_float": state.extra.get("kept_in_float", []),
        "measurement": {"quick": "one short stable-window run per candidate",
                        "final": f"{ROUNDS} interleaved rounds; speedup = median of "
                                 "per-round p50 ratios", "loop": "closed, one at a time"},
        "time_budget_s": time_budget_s,
        "elapsed_s": round(time.monotonic() - start, 1),
        "resumed_variants": state.resumed,
        "environment": environment(),
    }


def pareto(rows: list[dict[str, Any]]) -> list[str]:
    """Ids of candidates no other beats on both p50 latency and the budget metric's drop."""
    points = [(r["quick"]["p50_ms"], r["validation"]["drop"], r["id"]) for r in rows
              if r["quick"].get("p50_ms") is not None]
    return [i for p, d, i in points
            if not any((p2 <= p and d2 <= d) and (p2 < p or d2 < d) for p2, d2, _ in points)]
