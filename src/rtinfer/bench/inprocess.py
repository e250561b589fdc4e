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
from functools import partial
from typing import Any

import numpy as np
import psutil

from rtinfer._progress import Progress
from rtinfer.bench.stats import latency_summary, measure_windows
from rtinfer.engines import Session, load
from rtinfer.hardware import environment, estimate_peak_flops
from rtinfer.models import ImportedModel, import_model
from rtinfer.models.summary import count_flops

__all__ = ["SCHEMA", "batch_feeds", "bench_model"]

SCHEMA = "rtinfer.result/1"



def batch_feeds(
    model: ImportedModel,
    batch: int,
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Feeds of ``batch`` rows: the rows of ``inputs`` repeated cyclically, else synthetic
    (of ``shapes`` where given)."""
    if inputs is None:
        return model.spec.example_inputs(batch=batch, dims=dims, shapes=shapes)
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
    shapes: Mapping[str, Sequence[int]] | None = None,
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
    if shapes:
        if inputs is not None:
            raise ValueError("give --shape for synthetic inputs only: with a kit's or a "
                             "task's real rows, their own shapes are timed")
        imported.spec.check_shapes(shapes, dims)  # before a long load
    session = load(imported, engine, threads, warmup=False, **engine_options)
    first = batch_feeds(imported, int(batch_sizes[0]), dims, inputs, shapes)
    t0 = time.perf_counter()
    session.run(first)
    first_inference_s = time.perf_counter() - t0

    if peak_flops is None:
        peak, peak_source = estimate_peak_flops(cores=session.threads)
    else:
        peak, peak_source = float(peak_flops), "given by the user"
    rows = []
    for batch in (int(b) for b in batch_sizes):
        feeds = batch_feeds(imported, batch, dims, inputs, shapes)
        row, _ = measure_batch(session, feeds, window_s=window_s, stability=stability,
                               max_windows=max_windows, peak_flops=peak, progress=say)
        rows.append(row)
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
        "resources": _memory(psutil.Process()),
        "peak_flops": {"value": peak, "source": peak_source},
        "environment": environment(),
    }


def measure_batch(
    session: Session,
    feeds: dict[str, np.ndarray],
    *,
    window_s: float = 1.0,
    stability: float = 0.10,
    max_windows: int = 10,
    peak_flops: float,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Warm up, then measure ``feeds`` in stable windows; a result row and the raw samples."""
    say = progress or (lambda _msg: None)
    batch = len(next(iter(feeds.values())))
    say(f"batch {batch}: warm-up")
    _warm_up(session.run, feeds, seconds=min(0.5, window_s))
    proc = psutil.Process()
    cpu0, wall0 = proc.cpu_times(), time.perf_counter()
    run = measure_windows(
        partial(session.run, feeds), window_s=window_s, stability=stability,
        max_windows=max_windows, on_window=partial(_say_window, say, batch),
    )
    cpu1, wall1 = proc.cpu_times(), time.perf_counter()
    latency = latency_summary(run.samples)
    flops = _flops(session, _dims_of(session, feeds), batch)
    median_s = latency["p50"] / 1e3
    row = {
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
        "efficiency": (flops / median_s) / peak_flops if flops else None,
    }
    return row, run.samples


_FLOPS: dict[tuple[str, str, tuple[tuple[str, int], ...], int], int] = {}


def _flops(session: Session, dims: dict[str, int], batch: int) -> int:
    """FLOPs per call, counted once per model and shape: counting runs shape inference over
    the whole graph (~0.3 s on MiniLM), and interleaved comparisons ask many times."""
    if session.model.is_tflite:  # FLOPs are counted on ONNX graphs; a .tflite has none
        return 0
    key = (str(session.model.path), session.model.source.sha256, tuple(sorted(dims.items())),
           batch)
    if key not in _FLOPS:
        _FLOPS[key] = int(count_flops(session.model, dims, batch=batch)["total"])
    return _FLOPS[key]


def _dims_of(session: Session, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Symbolic dimension sizes as the actual feeds have them (e.g. sequence=23)."""
    dims: dict[str, int] = {}
    for spec in session.spec.inputs:
        for axis, d in enumerate(spec.shape):
            if isinstance(d, str):
                dims.setdefault(d, int(feeds[spec.name].shape[axis]))
    return dims


def _say_window(say: Progress, batch: int, window: int) -> None:
    say(f"batch {batch}: window {window}")


def _warm_up(run: Callable[[Any], object], feeds: Any, seconds: float) -> None:
    """At least 3 calls and ``seconds`` of calls: caches, allocators and kernels settle."""
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < seconds:
        run(feeds)
        n += 1


def _memory(proc: psutil.Process) -> dict[str, Any]:
    rss = proc.memory_info().rss  # read first: the high-water mark below then includes it
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"rss_bytes": rss, "peak_rss_bytes": max(peak, rss),
            "peak_rss_note": "process lifetime high-water mark (getrusage ru_maxrss)"}


def _busy(times: Any) -> float:
    return float(times.user + times.system)
