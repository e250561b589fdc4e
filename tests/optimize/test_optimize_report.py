"""The optimize report's charts keep every label inside the picture, built from small
synthetic results shaped like the fraud kit's (``rtinfer optimize --kit fraud``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from browser import assert_laid_out_in_browser, needs_chromium
from rtinfer.optimize.report import render_html
from svg_layout import assert_laid_out, frame, parse


def _candidate(vid: str, engine: str, p50: float, drop: float, within: bool,
               chosen: bool = False) -> dict[str, Any]:
    return {"id": f"{vid}@{engine}", "variant": vid, "engine": engine, "recipe": [],
            "size_bytes": 64231, "chosen": chosen, "final": None,
            "quick": {"p50_ms": p50, "p99_ms": 2 * p50, "samples_per_s": 1e3 / p50},
            "validation": {"drop": drop, "within_budget": within,
                           "excluded_by": [] if within else ["pr_auc"],
                           "fidelity": {"probabilities": {"cosine_min": 1 - drop}}}}


def _result(max_drop: float, chosen_variant: str, engine: str,
            slo: float | None) -> dict[str, Any]:
    # The fraud kit's shape: the original at the top, int8 forms a little lower, the smaller
    # float forms (distilled, pruned) far below; latencies from 9 us to 0.12 ms.
    rows = [_candidate("fp32", "onnxruntime", 0.0095, 0.0, True, chosen_variant == "fp32"),
            _candidate("fp32", "openvino", 0.078, 0.0, True),
            _candidate("int8-dynamic", "onnxruntime", 0.012, 0.0008, True,
                       chosen_variant == "int8-dynamic"),
            _candidate("int8-dynamic", "openvino", 0.123, 0.0008, True),
            _candidate("int8-ov-dynamic", "openvino", 0.078, -0.0017, True),
            _candidate("int8-nncf", "openvino", 0.077, 0.0599, False),
            _candidate("distilled+int8-dynamic", "onnxruntime", 0.012, 0.0447, False),
            _candidate("pruned+int8-nncf", "openvino", 0.080, 0.1343, False)]
    rng = np.random.default_rng(0)
    samples = {k: (rng.lognormal(np.log(m), 0.5, 3000) + rng.pareto(3, 3000) * m).tolist()
               for k, m in (("original", 0.0095), ("chosen", 0.012))}
    chosen = next(r for r in rows if r["chosen"])
    return {
        "kind": "optimize", "model": {"kit": "fraud", "source": {"description": "FraudMLP"}},
        "budget": {"metric": "pr_auc", "max_drop": max_drop, "kind": "absolute",
                   "text": f"pr_auc may drop by at most {max_drop:g}"},
        "batch": 1, "threads": 2, "slo_p99_ms": slo, "float_metrics": {"pr_auc": 0.3226},
        "candidates": rows, "pareto": ["fp32@onnxruntime", "int8-ov-dynamic@openvino"],
        "chosen": {"variant": chosen["variant"], "engine": engine, "id": chosen["id"],
                   "why": "the fastest within the budget", "speedup_vs_original_ort": 1.0,
                   "latency_ms": {"p50": 0.0095, "p99": 0.036}, "meets_slo": True},
        "held_out": {}, "latency_samples_ms": samples, "original_engine": "onnxruntime",
        "measurement": {"final": "3 interleaved rounds"}, "elapsed_s": 123.0,
        "time_budget_s": 240.0, "environment": {},
    }


@pytest.mark.parametrize(("max_drop", "chosen", "engine", "slo"), [
    (0.01, "fp32", "onnxruntime", None),          # the fraud demo: "original = chosen"
    (0.0005, "int8-dynamic", "onnxruntime", 0.12),  # the floor right under the top points
    (0.2, "int8-dynamic", "openvino-with-a-long-device-name-GPU.0-and-a-cache-dir", 0.0001),
], ids=["original-stays", "tight-floor", "wide-floor-long-engine"])
def test_charts_keep_every_label_inside(max_drop: float, chosen: str, engine: str,
                                        slo: float | None) -> None:
    page = render_html(_result(max_drop, chosen, engine, slo))
    pareto, cdf = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    items = assert_laid_out(pareto)     # inside the viewBox; no label over another
    plot = frame(parse(pareto))
    inside = {t.text: t.box for t in items if t.cls == "inframe"}
    assert "budget floor" in inside and inside["budget floor"].within(plot)
    assert ("p99 objective" in inside) == (slo is not None)
    assert {t.text for t in items if t.cls == "legend"} == {
        "within budget", "over budget", "Pareto front", "chosen"}
    legend = " ".join(t.text for t in assert_laid_out(cdf) if t.cls == "legend")
    if chosen == "fp32":
        assert legend == "original = chosen (onnxruntime)"    # cut off at 640 px before
    else:
        assert legend == f"original (onnxruntime) chosen ({engine})"


@needs_chromium
@pytest.mark.parametrize(("max_drop", "chosen", "engine", "slo"), [
    (0.01, "fp32", "onnxruntime", None),
    (0.2, "int8-dynamic", "openvino-with-a-long-device-name-GPU.0-and-a-cache-dir", 0.0001),
], ids=["original-stays", "wide-floor-long-engine"])
def test_the_page_lays_out_in_a_real_browser(max_drop: float, chosen: str, engine: str,
                                             slo: float | None, tmp_path: Path) -> None:
    """The same rules with the boxes Chromium draws: offline, no script error, every label
    in its picture, reference labels and data in the frame, the legend off it."""
    page = render_html(_result(max_drop, chosen, engine, slo))
    pareto, cdf = assert_laid_out_in_browser(page, tmp_path)
    assert "budget floor" in {t.text for t in pareto if t.cls == "inframe"}
    assert {t.text for t in pareto if t.cls == "legend"} == {
        "within budget", "over budget", "Pareto front", "chosen"}
    assert any(t.cls == "legend" for t in cdf)
