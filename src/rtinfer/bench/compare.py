"""Several engines on one model, side by side in one run, with speed and fidelity ratios.

The baseline (PyTorch eager when the model has a PyTorch source, else the first engine) is
measured in the same run as the others; every speedup is ``baseline p50 / engine p50`` and every
fidelity figure is the max abs difference of each output from the baseline's on the same feeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rtinfer.bench.inprocess import Progress, batch_feeds, bench_model
from rtinfer.engines import load, resolve_engine
from rtinfer.models import import_model

__all__ = ["compare_engines"]


def compare_engines(
    model: Any,
    engines: Sequence[str],
    *,
    threads: int | None = None,
    batch_sizes: Sequence[int] = (1,),
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    window_s: float = 1.0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure every engine in ``engines``; the first one is the baseline for the ratios."""
    engines = [resolve_engine(e) for e in engines]
    if not engines:
        raise ValueError("give at least one engine to compare")
    imported = import_model(model)
    say = progress or (lambda _msg: None)
    feeds = batch_feeds(imported, int(batch_sizes[0]), dims, inputs)
    runs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name in engines:
        say(f"{name}: measuring")
        runs[name] = bench_model(
            imported, engine=name, threads=threads, batch_sizes=batch_sizes, dims=dims,
            inputs=inputs, window_s=window_s,
            progress=lambda msg, name=name: say(f"{name}: {msg}"),
        )
        with load(imported, name, threads, warmup=False) as session:
            outputs[name] = session.run(feeds)
    base = engines[0]
    rows = []
    for name in engines:
        for i, result in enumerate(runs[name]["results"]):
            base_p50 = runs[base]["results"][i]["latency_ms"]["p50"]
            rows.append({
                "engine": name,
                "batch": result["batch"],
                "p50_ms": result["latency_ms"]["p50"],
                "p99_ms": result["latency_ms"]["p99"],
                "n": result["latency_ms"]["n"],
                "stable": result["stable"],
                "samples_per_s": result["throughput"]["samples_per_s"],
                "cpu_percent": result["cpu_percent"],
                "speedup_vs_baseline": base_p50 / result["latency_ms"]["p50"],
                "max_abs_diff_vs_baseline": {
                    k: float(np.max(np.abs(outputs[name][k].astype(np.float64)
                                           - outputs[base][k].astype(np.float64))))
                    for k in outputs[base]
                },
            })
    return {"schema": "rtinfer.result/1", "kind": "compare-engines", "baseline": base,
            "rows": rows, "runs": runs}
