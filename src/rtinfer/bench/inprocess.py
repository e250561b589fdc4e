"""In-process measurement of one model on one engine: cold start, then steady-state latency.

    result = bench_model("model.onnx", engine="openvino", threads=2, batch_sizes=[1, 8])
    result["results"][0]["latency_ms"]["p99"]

What is measured, in order:

1. cold start — engine load/compile time, then the first inference on its own;
2. per batch size — a warm-up, then closed-loop windows (one call at a time, back to back)
   until three consecutive windows agree within 10% (see :func:`measure_windows`);
   percentiles over the pooled samples with the estimator named; throughput in samples/s;
   CPU % of this process during the windows (100 = one core busy); FLOPs per call and the
   efficiency against a peak, given or estimated from the CPU's flags.

The result is a plain dict following rtinfer's result schema (``schema: rtinfer.result/1``),
ready for ``json.dump``; reports are built from these files only.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import psutil

from rtinfer.bench.stats import latency_summary, measure_windows
from rtinfer.engines import load
from rtinfer.hardware import environment, estimate_peak_flops
from rtinfer.models import ImportedModel, import_model
from rtinfer.models.summary import count_flops

__all__ = ["SCHEMA", "bench_model", "batch_feeds"]

SCHEMA = "rtinfer.result/1"

Progress = Callable[[str], None]


def batch_feeds(
    model: ImportedModel,
    batch: int,
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Feeds of ``batch`` rows: the rows of ``inputs`` repeated cyclically, else synthetic."""
    if inputs is None:
        return model.spec.example_inputs(batch=batch, dims=dims)
    rows = np.arange(batch)
    return {k: np.ascontiguousarray(np.take(v, rows % len(v), axis=0)) for k, v in inputs.items()}


def bench_model(
    model: Any,
    *,
    engine: str | None = None,
    threads: int | None = None,
    batch_sizes: Sequence[int] = (1,),
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    window_s: float = 1.0,
    stability: float = 0.10,
    max_windows: int = 10,
    peak_flops: float | None = None,
    progress: Progress | None = None,
    **engine_options: Any,
) -> dict[str, Any]:
    """Measure ``model`` on ``engine``; see the module docstring for what and how."""
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    imported = import_model(model)
    import_s = time.perf_counter() - t0
    say(f"loading on {engine or 'onnxruntime'}")
    session = load(imported, engine, threads, warmup=False, **engine_options)
    first = batch_feeds(imported, int(batch_sizes[0]), dims, inputs)
    t0 = time.perf_counter()
    session.run(first)
    first_inference_s = time.perf_counter() - t0

    if peak_flops is None:
        peak, peak_source = estimate_peak_flops(cores=session.threads)
    else:
        peak, peak_source = float(peak_flops), "given by the user"
    proc = psutil.Process()
    rows = []
    for batch in (int(b) for b in batch_sizes):
        feeds = batch_feeds(imported, batch, dims, inputs)
        say(f"batch {batch}: warm-up")
        _warm_up(session.run, feeds, seconds=min(0.5, window_s))
        cpu0, wall0 = proc.cpu_times(), time.perf_counter()
        run = measure_windows(
            lambda feeds=feeds: session.run(feeds), window_s=window_s, stability=stability,
            max_windows=max_windows,
            on_window=lambda i, batch=batch: say(f"batch {batch}: window {i}"),
        )
        cpu1, wall1 = proc.cpu_times(), time.perf_counter()
        latency = latency_summary(run.samples)
        flops = count_flops(imported, dims, batch=batch)["total"]
        median_s = latency["p50"] / 1e3
        rows.append({
            "batch": batch,
            "input_shapes": {k: list(v.shape) for k, v in feeds.items()},
            "latency_ms": latency,
            "throughput": {
                "samples_per_s": batch * len(run.samples) / run.wall_seconds,
                "inferences_per_s": len(run.samples) / run.wall_seconds,
            },
            "windows": run.windows,
            "stable": run.stable,
            "spread": run.spread,
            "cpu_percent": 100.0 * (_busy(cpu1) - _busy(cpu0)) / max(wall1 - wall0, 1e-9),
            "flops_per_inference": flops,
            "achieved_flops_per_s": flops / median_s if flops else None,
            "efficiency": (flops / median_s) / peak if flops else None,
        })
    return {
        "schema": SCHEMA,
        "kind": "bench-model",
        "model": {
            "source": imported.source.to_dict(),
            "path": str(imported.path),
            "size_bytes": imported.size_bytes,
            "dims": dict(dims or {}),
            "inputs": "given" if inputs is not None else "synthetic",
        },
        "engine": session.describe(),
        "load": {
            "scenario": "in-process single stream",
            "loop": "closed",
            "concurrency": 1,
            "window_s": window_s,
            "stability": stability,
            "max_windows": max_windows,
        },
        "cold_start": {"import_s": import_s, "load_s": session.load_seconds,
                       "first_inference_s": first_inference_s},
        "results": rows,
        "resources": {
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_rss_note": "process lifetime high-water mark (getrusage ru_maxrss)",
            "rss_bytes": proc.memory_info().rss,
        },
        "peak_flops": {"value": peak, "source": peak_source},
        "environment": environment(),
    }


def _warm_up(run: Callable[[Any], object], feeds: Any, seconds: float) -> None:
    """At least 3 calls and ``seconds`` of calls: caches, allocators and kernels settle."""
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < seconds:
        run(feeds)
        n += 1


def _busy(times: Any) -> float:
    return float(times.user + times.system)
