"""Latency statistics with the estimator named, and perf_analyzer-style stable windows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ESTIMATOR", "PERCENTILES", "WindowedRun", "latency_summary", "measure_windows"]

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
ESTIMATOR = "numpy.percentile method='linear' (Hyndman-Fan type 7) over all samples"


def latency_summary(seconds: np.ndarray) -> dict[str, Any]:
    """Percentiles (ms) of latency samples given in seconds, with n and the estimator."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no latency samples to summarise")
    out: dict[str, Any] = {"n": int(ms.size), "estimator": ESTIMATOR}
    for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES, method="linear"), strict=True):
        out[f"p{p:g}".replace(".", "_")] = float(v)
    out.update(mean=float(ms.mean()), std=float(ms.std()), min=float(ms.min()),
               max=float(ms.max()))
    return out


@dataclass
class WindowedRun:
    samples: np.ndarray          # per-call latency in seconds, from the accepted windows
    windows: int                 # windows measured in all
    stable: bool                 # the last `stable_windows` agreed within `stability`
    spread: float                # largest relative deviation from the mean among those windows
    wall_seconds: float          # wall time of the accepted windows


def measure_windows(
    call: Callable[[], object],
    *,
    window_s: float = 1.0,
    min_samples: int = 5,
    stability: float = 0.10,
    stable_windows: int = 3,
    max_windows: int = 10,
    on_window: Callable[[int], None] | None = None,
) -> WindowedRun:
    """Call ``call`` back to back (closed loop, one at a time) in measurement windows.

    As Triton's perf_analyzer does, windows repeat until the last ``stable_windows`` agree:
    both their throughput and their median latency lie within ``stability`` (relative) of
    their mean. The result pools those windows' samples; if they never agree within
    ``max_windows``, it pools the last ones anyway and says so (``stable=False``, ``spread``).
    """
    if stable_windows < 1 or max_windows < stable_windows:
        raise ValueError("need 1 <= stable_windows <= max_windows")
    windows: list[tuple[np.ndarray, float]] = []
    spread = float("inf")
    for i in range(max_windows):
        lat: list[float] = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            if t1 - start >= window_s and len(lat) >= min_samples:
                break
        windows.append((np.asarray(lat), t1 - start))
        if on_window:
            on_window(i + 1)
        if len(windows) >= stable_windows:
            spread = _spread(windows[-stable_windows:])
            if spread <= stability:
                break
    last = windows[-stable_windows:]
    return WindowedRun(
        samples=np.concatenate([w for w, _ in last]),
        windows=len(windows),
        stable=spread <= stability,
        spread=spread,
        wall_seconds=sum(s for _, s in last),
    )


def _spread(windows: list[tuple[np.ndarray, float]]) -> float:
    throughput = np.array([len(w) / s for w, s in windows])
    median = np.array([np.median(w) for w, _ in windows])
    return float(max(np.max(np.abs(x / x.mean() - 1)) for x in (throughput, median)))
