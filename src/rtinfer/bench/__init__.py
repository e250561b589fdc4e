"""Measurement: in-process benchmarks, and load tests of models and servers (MLPerf LoadGen's
scenarios; the server scenario on rtinfer's open loop)."""

from rtinfer.bench.compare import compare_engines
from rtinfer.bench.inprocess import SCHEMA, bench_model
from rtinfer.bench.loadgen import LoadSpec, run_loadgen
from rtinfer.bench.samples import load_samples
from rtinfer.bench.stats import ESTIMATOR, latency_summary, measure_windows
from rtinfer.bench.sweep import sweep
from rtinfer.bench.targets import open_target

__all__ = ["ESTIMATOR", "SCHEMA", "LoadSpec", "bench_model", "compare_engines",
           "latency_summary", "load_samples", "measure_windows", "open_target", "run_loadgen",
           "sweep"]
