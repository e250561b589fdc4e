"""Which engine and thread count suit this model, this machine and this goal — by measurement.

    advice = advise("model.onnx", goal="latency", slo_ms=10)
    advice["recommendation"]  # {"engine": "openvino", "threads": 2, "p50_ms": ..., ...}
    advice["reasons"]         # why, in words: format, CPU features, goal, measured margin

Every available engine is measured at a few thread counts (1 and all usable cores) in one run;
the recommendation is the measured best for the goal — lowest median latency (lowest p99 when an
objective is given) for ``latency``, most samples/s for ``throughput`` — among candidates that
meet the objective. The reasons add what the hardware and format say, but never override the
measurement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rtinfer.bench.inprocess import SCHEMA, Progress, bench_model
from rtinfer.engines import available_engines, resolve_engine
from rtinfer.errors import EngineError
from rtinfer.hardware import cpu_info, environment, gpu_names, usable_cores
from rtinfer.models import import_model

__all__ = ["GOALS", "advise"]

GOALS = ("latency", "throughput")


def advise(
    model: Any,
    *,
    goal: str = "latency",
    slo_ms: float | None = None,
    engines: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
    batch: int | None = None,
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    window_s: float = 0.5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure engines x thread counts on ``model`` and recommend one; see the module doc."""
    if goal not in GOALS:
        raise ValueError(f"goal must be one of {GOALS}, got {goal!r}")
    if slo_ms is not None and slo_ms <= 0:
        raise ValueError(f"slo_ms must be > 0, got {slo_ms}")
    imported = import_model(model)
    names = [resolve_engine(e) for e in engines] if engines else available_engines()
    cores = usable_cores()
    thread_options = sorted(set(threads or (1, cores)))
    batch = batch or (1 if goal == "latency" else 32)
    say = progress or (lambda _msg: None)

    candidates: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        for n in thread_options:
            say(f"{name}, {n} thread(s)")
            try:
                result = bench_model(imported, engine=name, threads=n, batch_sizes=[batch],
                                     dims=dims, inputs=inputs, window_s=window_s, max_windows=6)
            except EngineError as exc:
                skipped[name] = str(exc)
                break
            row = result["results"][0]
            candidates.append({
                "engine": name,
                "threads": n,
                "batch": batch,
                "p50_ms": row["latency_ms"]["p50"],
                "p99_ms": row["latency_ms"]["p99"],
                "samples_per_s": row["throughput"]["samples_per_s"],
                "cpu_percent": row["cpu_percent"],
                "stable": row["stable"],
                "meets_slo": slo_ms is None or row["latency_ms"]["p99"] <= slo_ms,
            })
    if not candidates:
        raise EngineError(f"no engine could run this model: {skipped}")

    eligible = [c for c in candidates if c["meets_slo"]] or []
    pool = eligible or candidates
    if goal == "latency":
        key = "p99_ms" if slo_ms is not None else "p50_ms"
        ranked = sorted(pool, key=lambda c: c[key])
    else:
        ranked = sorted(pool, key=lambda c: -c["samples_per_s"])
    best = ranked[0]
    reasons = _reasons(imported.source.kind, best, ranked, goal, slo_ms, bool(eligible))
    return {
        "schema": SCHEMA,
        "kind": "advise",
        "goal": goal,
        "slo_ms": slo_ms,
        "recommendation": best,
        "meets_slo": bool(eligible),
        "candidates": candidates,
        "skipped": skipped,
        "reasons": reasons,
        "estimator": "p50/p99: numpy.percentile method='linear' over closed-loop samples",
        "environment": environment(),
    }


def _reasons(source_kind: str, best: dict[str, Any], ranked: list[dict[str, Any]], goal: str,
             slo_ms: float | None, met: bool) -> list[str]:
    info = cpu_info()
    out = []
    metric = ("p99" if slo_ms is not None else "median") if goal == "latency" else "throughput"
    if len(ranked) > 1:
        runner = ranked[1]
        if goal == "latency":
            k = "p99_ms" if slo_ms is not None else "p50_ms"
            margin = runner[k] / best[k]
            out.append(f"Measured: {best['engine']} with {best['threads']} thread(s) has the "
                       f"lowest {metric} latency, {best[k]:.3g} ms, {margin:.2f}x better than "
                       f"the next ({runner['engine']}, {runner['threads']} thread(s)).")
        else:
            margin = best["samples_per_s"] / runner["samples_per_s"]
            out.append(f"Measured: {best['engine']} with {best['threads']} thread(s) gives the "
                       f"most throughput at batch {best['batch']}, {best['samples_per_s']:.4g} "
                       f"samples/s, {margin:.2f}x the next ({runner['engine']}).")
    if slo_ms is not None:
        out.append(f"Objective p99 <= {slo_ms:g} ms: " + (
            "met by the recommendation." if met else
            "no candidate met it; the recommendation is the closest. Optimize the model "
            "(rtinfer optimize) or relax the objective."))
    out.append({
        "onnx": "Format: ONNX runs natively on ONNX Runtime and OpenVINO; no conversion loss.",
        "torch": "Format: a PyTorch model; ONNX export lets ONNX Runtime/OpenVINO fuse ops, "
                 "while eager PyTorch pays Python dispatch per op.",
        "transformers": "Format: a transformers model; exported graphs fuse attention and "
                        "layer norms, which eager PyTorch runs op by op.",
        "sklearn": "Format: a scikit-learn model; tree and linear ops run in ONNX Runtime's "
                   "ML operators (OpenVINO supports fewer of them).",
        "xgboost": "Format: an XGBoost model; trees run in ONNX Runtime's TreeEnsemble operator.",
    }.get(source_kind, f"Format: {source_kind}."))
    isa = ", ".join(info.flags) or "no wide SIMD flags found"
    hw = f"Hardware: {info.model}, {info.usable_cores} usable core(s), ISA: {isa}."
    if info.has("amx_tile"):
        hw += " AMX is present: OpenVINO and PyTorch can run bf16/int8 matrix tiles."
    elif info.has("avx512_vnni") or info.has("avx_vnni"):
        hw += " VNNI is present: int8 kernels can be ~2-4x faster (see rtinfer quantize)."
    gpus = gpu_names()
    hw += f" GPU: {', '.join(gpus)}." if gpus else " No GPU found: CPU engines only."
    out.append(hw)
    if best["threads"] < info.usable_cores:
        out.append(f"Threads: {best['threads']} beat {info.usable_cores}; with a tiny model "
                   "thread synchronisation costs more than it saves, and the free core can "
                   "serve a second instance.")
    return out
