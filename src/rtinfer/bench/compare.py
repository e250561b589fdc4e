"""Several engines on one model, side by side in one run, with speed and fidelity ratios.

Shared machines drift: a neighbour's load can slow every call for a minute. So the engines
are measured in interleaved rounds (A, B, C, A, B, C, …) with all sessions loaded, and each
speedup is the median over rounds of ``baseline p50 / engine p50`` from the *same* round;
latency percentiles pool every round's samples. The baseline is the first engine (PyTorch
eager when the caller lists it first). Fidelity is the max abs difference of each output from
the baseline's on the same feeds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

import numpy as np

from rtinfer.bench.inprocess import SCHEMA, Progress, batch_feeds
from rtinfer.bench.interleave import measure_interleaved
from rtinfer.engines import Session, load, resolve_engine
from rtinfer.hardware import environment
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
    rounds: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure every engine in ``engines`` in ``rounds`` interleaved rounds; see module doc."""
    names = [resolve_engine(e) for e in engines]
    if not names:
        raise ValueError("give at least one engine to compare")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    say = progress or (lambda _msg: None)
    imported = import_model(model)
    sessions: dict[str, Session] = {}
    cold: dict[str, dict[str, float]] = {}
    feeds = {b: batch_feeds(imported, int(b), dims, inputs) for b in batch_sizes}
    first = feeds[batch_sizes[0]]
    try:
        for name in names:
            say(f"{name}: loading")
            sessions[name] = load(imported, name, threads, warmup=False)
            t0 = time.perf_counter()
            sessions[name].run(first)
            cold[name] = {"load_s": sessions[name].load_seconds,
                          "first_inference_s": time.perf_counter() - t0}
        measured = {b: measure_interleaved(sessions, feeds[b], rounds=rounds,
                                           window_s=window_s, max_windows=10, warmup_s=0.5,
                                           progress=say)
                    for b in batch_sizes}
        outputs = {name: sessions[name].run(first) for name in names}
        engine_info = {name: sessions[name].describe() for name in names}
    finally:
        for session in sessions.values():
            session.close()

    base = names[0]
    rows = []
    for name in names:
        for b in batch_sizes:
            m = measured[b][name]
            ratios = [bp / ep for bp, ep in zip(measured[b][base]["round_p50_ms"],
                                                 m["round_p50_ms"], strict=True)]
            rows.append({
                "engine": name,
                "batch": b,
                "p50_ms": m["latency_ms"]["p50"],
                "p99_ms": m["latency_ms"]["p99"],
                "n": m["latency_ms"]["n"],
                "latency_ms": m["latency_ms"],
                "stable": m["stable"],
                "samples_per_s": m["samples_per_s"],
                "cpu_percent": m["cpu_percent"],
                "speedup_vs_baseline": median(ratios),
                "speedup_per_round": ratios,
                "max_abs_diff_vs_baseline": {
                    k: float(np.max(np.abs(outputs[name][k].astype(np.float64)
                                           - outputs[base][k].astype(np.float64))))
                    for k in outputs[base]
                },
            })
    return {
        "schema": SCHEMA,
        "kind": "compare-engines",
        "baseline": base,
        "rounds": rounds,
        "model": {"source": imported.source.to_dict(), "dims": dict(dims or {}),
                  "inputs": "given" if inputs is not None else "synthetic"},
        "engines": engine_info,
        "cold_start": cold,
        "load": {"scenario": "in-process single stream", "loop": "closed", "concurrency": 1,
                 "window_s": window_s, "interleaved_rounds": rounds},
        "rows": rows,
        "environment": environment(),
    }
