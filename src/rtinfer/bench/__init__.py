"""Measurement: in-process benchmarks (this package) and, later, load generation over HTTP."""

from rtinfer.bench.compare import compare_engines
from rtinfer.bench.inprocess import SCHEMA, bench_model
from rtinfer.bench.stats import ESTIMATOR, latency_summary, measure_windows

__all__ = ["ESTIMATOR", "SCHEMA", "bench_model", "compare_engines", "latency_summary",
           "measure_windows"]
