"""Latency statistics: the percentile estimator is the one we name."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rtinfer.bench.stats import ESTIMATOR, latency_summary, measure_windows


def test_percentiles_are_linear_interpolation() -> None:
    samples = np.arange(1, 101) / 1e3  # 1..100 ms
    s = latency_summary(samples)
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(50.5)
    assert s["p99"] == pytest.approx(99.01)
    assert s["p99_9"] == pytest.approx(99.901)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0)
    assert "linear" in s["estimator"] and s["estimator"] == ESTIMATOR


def test_empty_samples_are_an_error() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        latency_summary(np.array([]))


def test_windows_stop_once_three_agree() -> None:
    run = measure_windows(lambda: sum(range(2000)), window_s=0.02, min_samples=5)
    assert run.windows >= 3
    assert run.samples.size >= 15
    assert run.stable == (run.spread <= 0.10)


def test_unstable_calls_are_reported_not_hidden() -> None:
    # Every other window is ~5x slower: windows never agree within 10%.
    import time

    counter = itertools.count()

    def call() -> None:
        time.sleep(0.001 if (next(counter) // 10) % 2 else 0.005)

    run = measure_windows(call, window_s=0.0, min_samples=10, max_windows=5)
    assert run.windows == 5
    assert not run.stable
    assert run.spread > 0.10


def test_window_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="stable_windows"):
        measure_windows(lambda: None, stable_windows=5, max_windows=3)
