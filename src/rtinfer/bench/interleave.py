"""Several loaded sessions measured in interleaved rounds, with per-round speed ratios.

    results = measure_interleaved({"eager": s1, "int8": s2}, feeds, rounds=3)
    speedup = ratio(results, base="eager", other="int8")   # median of per-round p50 ratios

Shared machines drift (a neighbour's burst can slow everything for a minute), so every
session is measured once per round, A B C A B C …, and a speedup is the median over rounds of
``base p50 / other p50`` taken from the same round. ``feeds`` is one batch (the same inputs on
every call) or a list of batches used in turn — e.g. sentences at their real lengths, so that
latency follows the data's length distribution rather than one padded shape.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Hashable, Mapping, Sequence
from statistics import median
from typing import Any, TypeVar

import numpy as np
import psutil

from rtinfer.bench.stats import latency_summary, measure_windows
from rtinfer.engines.base import Session

__all__ = ["FASTER", "measure_interleaved", "ratio"]

#: How much faster (a ``ratio``) one side must be before rtinfer calls it faster: on this
#: project's shared 2-core machines, repeated interleaved runs of one model differ by up to
#: ~4% in their median ratio, so 1.05 is the first value that is more than noise.
FASTER = 1.05

K = TypeVar("K", bound=Hashable)
Feeds = Mapping[str, np.ndarray]


def measure_interleaved(
    sessions: Mapping[K, Session],
    feeds: Feeds | Sequence[Feeds],
    *,
    rounds: int = 3,
    window_s: float = 1.0,
    max_windows: int = 3,
    warmup_s: float = 0.3,
    progress: Any = None,
) -> dict[K, dict[str, Any]]:
    """Per session: pooled latency percentiles (ms), per-round p50s, samples/s and CPU %."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    batches = [dict(feeds)] if isinstance(feeds, Mapping) else [dict(f) for f in feeds]
    if not batches:
        raise ValueError("give at least one batch of inputs to measure")
    say = progress or (lambda _msg: None)
    proc = psutil.Process()
    raw: dict[K, list[dict[str, Any]]] = {k: [] for k in sessions}
    for r in range(rounds):
        for key, session in sessions.items():
            say(f"round {r + 1}/{rounds}: {key}")
            turn = itertools.cycle(batches)
            deadline = time.perf_counter() + warmup_s
            while time.perf_counter() < deadline:
                session.run(next(turn))

            def call(session: Session = session, turn: Any = turn) -> None:
                session.run(next(turn))

            cpu0, t0 = _busy(proc), time.perf_counter()
            run = measure_windows(call, window_s=window_s, max_windows=max_windows)
            wall = time.perf_counter() - t0
            raw[key].append({"samples": run.samples, "stable": run.stable,
                             "cpu_percent": 100 * (_busy(proc) - cpu0) / max(wall, 1e-9),
                             "samples_per_s": _rows_per_call(batches) * len(run.samples)
                             / run.wall_seconds})
    out: dict[K, dict[str, Any]] = {}
    for key, per_round in raw.items():
        pooled = np.concatenate([p["samples"] for p in per_round])
        out[key] = {
            "latency_ms": latency_summary(pooled),
            "round_p50_ms": [float(np.median(p["samples"]) * 1e3) for p in per_round],
            "samples_per_s": median(p["samples_per_s"] for p in per_round),
            "cpu_percent": median(p["cpu_percent"] for p in per_round),
            "stable": all(p["stable"] for p in per_round),
            "samples_ms": (pooled * 1e3).round(4).tolist(),
        }
    return out


def ratio(results: Mapping[K, Mapping[str, Any]], base: K, other: K) -> float:
    """Median over rounds of base p50 / other p50 (> 1: ``other`` is faster)."""
    return float(median(b / o for b, o in zip(results[base]["round_p50_ms"],
                                              results[other]["round_p50_ms"], strict=True)))


def _rows_per_call(batches: Sequence[Feeds]) -> float:
    return float(np.mean([len(next(iter(b.values()))) for b in batches]))


def _busy(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)
