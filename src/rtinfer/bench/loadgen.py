"""MLPerf LoadGen drives the load; rtinfer supplies the samples, the target and the report.

    target = open_target("http://127.0.0.1:8000/v2/models/intent")
    result = run_loadgen(target, load_samples(kit="intent"),
                         LoadSpec("server", qps=40, slo_p99_ms=50, duration_s=10), "results/a")
    result["validity"], result["latency_ms"]["p99"]

Why LoadGen: it schedules queries itself (Poisson arrivals at the target QPS in the server
scenario, open loop), and counts every latency from the *scheduled* issue time, so a target
that falls behind cannot hide its queue (no coordinated omission); and it judges each run
VALID or INVALID by MLPerf's rules (minimum duration and query count, the latency bound at the
99th percentile, early stopping). Its logs (``mlperf_log_summary.txt``, ``_detail.txt``, the
trace) are kept in ``out_dir``; rtinfer reads the verdict from the detail log's ``:::MLLOG``
lines and the per-sample latencies from the trace, then summarises them with its own named
estimator (LoadGen's figures are kept beside them).

LoadGen calls ``issue`` on its own thread, holding the GIL, so ``issue`` only queues the work;
``target.concurrency`` worker threads run it and report completion. While a test runs, the
interpreter's thread switch interval is lowered to 0.2 ms (restored afterwards) so the issue
thread gets the GIL promptly; LoadGen's per-sample issue delay is reported all the same.
"""

from __future__ import annotations

import gzip
import json
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer._progress import Progress
from rtinfer.bench.inprocess import SCHEMA
from rtinfer.bench.resources import ResourceMonitor, bottleneck_warnings
from rtinfer.bench.samples import Samples
from rtinfer.bench.stats import latency_summary
from rtinfer.bench.targets import InProcessTarget, Target
from rtinfer.hardware import environment

__all__ = ["SCENARIOS", "LoadSpec", "probe_capacity", "run_loadgen"]

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
_SWITCH_INTERVAL_S = 0.0002
EARLY_STOPPING_MIN = 662  # queries LoadGen's early-stopping rule needs for a p99 claim
_LG_SCENARIO = {"single-stream": "SingleStream", "multi-stream": "MultiStream",
                "server": "Server", "offline": "Offline"}
_MLLOG = re.compile(r":::MLLOG (\{.*\})")
_SAMPLE = re.compile(r'"name":"Sample".*"ph":"b".*"ts":([\d.]+).*"issue_start_ns":(\d+),'
                     r'"complete_ns":(\d+)')


@dataclass(frozen=True)
class LoadSpec:
    """The load: scenario, offered QPS (server; offline's expectation), latency objective."""

    scenario: str
    qps: float | None = None
    slo_p99_ms: float | None = None
    duration_s: float = 10.0
    min_queries: int | None = None     # default: what early stopping needs for a p99 claim
    samples_per_query: int = 8         # multi-stream
    batch: int | None = None           # samples the SUT may join into one call
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario '{self.scenario}'; choose one of {SCENARIOS}")
        if self.scenario == "server" and not (self.qps and self.qps > 0):
            raise ValueError("the server scenario needs the offered load: --qps Q (Q > 0)")
        if self.duration_s <= 0:
            raise ValueError(f"duration must be > 0 s, got {self.duration_s}")
        if self.slo_p99_ms is not None and self.slo_p99_ms <= 0:
            raise ValueError(f"the p99 objective must be > 0 ms, got {self.slo_p99_ms}")


def run_loadgen(target: Target, samples: Samples, load: LoadSpec, out_dir: str | Path,
                *, series: str | None = None, progress: Progress | None = None
                ) -> dict[str, Any]:
    """Warm up, run one LoadGen test of ``load`` against ``target``, return the result dict.

    ``series`` names what is measured (e.g. "rtinfer serve", "kserve"): runs of one series
    at several loads form one line in the report."""
    lg = require("mlperf_loadgen", "Load testing with MLPerf LoadGen")
    say = progress or (lambda _msg: None)
    if not samples.items:
        raise ValueError("no samples to send")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say("warm-up")
    warm = _warm_up(target, samples)
    expected = load.qps
    if load.scenario == "offline" and not expected:
        say("offline: probing capacity")
        # 1.5x: if the target then runs faster than probed (a neighbour went quiet), the one
        # query still lasts the minimum duration instead of ending early (INVALID).
        expected = 1.5 * probe_capacity(target, samples)
    settings = _settings(lg, load, warm, len(samples), expected)
    driver = _Driver(lg, target, samples, load)
    monitor = ResourceMonitor(target.pid)
    driver.start(monitor)
    sut = lg.ConstructSUT(driver.issue, driver.flush)
    qsl = lg.ConstructQSL(len(samples), len(samples), _noop, _noop)
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = True
    say(f"{load.scenario}: running LoadGen")
    # LoadGen's issue thread needs the GIL to call back into Python; with the default 5 ms
    # switch interval a busy worker delays each scheduled issue by up to 5 ms.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    monitor.start()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        usage = monitor.stop()
        sys.setswitchinterval(switch)
        driver.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return _result(target, samples, load, out, usage, driver, warm, series)


def _settings(lg: Any, load: LoadSpec, warm_s: float, n_samples: int,
              expected_qps: float | None) -> Any:
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, _LG_SCENARIO[load.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(load.duration_s * 1000)
    ts.min_query_count = load.min_queries if load.min_queries is not None else (
        1 if load.scenario == "offline" else EARLY_STOPPING_MIN)
    ts.performance_sample_count_override = n_samples
    ts.schedule_rng_seed = ts.sample_index_rng_seed = ts.qsl_rng_seed = load.seed
    slo_ns = int((load.slo_p99_ms or 1000.0) * 1e6)
    warm_ns = max(int(warm_s * 1e9), 1000)
    if load.scenario == "server":
        ts.server_target_qps = float(load.qps or 1.0)
        ts.server_target_latency_ns = slo_ns
        ts.server_target_latency_percentile = 0.99
    elif load.scenario == "single-stream":
        ts.single_stream_expected_latency_ns = warm_ns
        ts.single_stream_target_latency_percentile = 0.99
    elif load.scenario == "multi-stream":
        ts.multi_stream_samples_per_query = load.samples_per_query
        ts.multi_stream_expected_latency_ns = warm_ns * load.samples_per_query
        ts.multi_stream_target_latency_percentile = 0.99
    else:
        # LoadGen sizes the one offline query from this (expected QPS x min duration x 1.1).
        ts.offline_expected_qps = float(expected_qps or 1.0 / max(warm_s, 1e-6))
    return ts


class _Driver:
    """Queues LoadGen's queries and runs them on ``target.concurrency`` worker threads."""

    def __init__(self, lg: Any, target: Target, samples: Samples, load: LoadSpec) -> None:
        self.lg, self.target, self.samples = lg, target, samples
        default = load.samples_per_query if load.scenario == "multi-stream" else 1
        self.batch = max(1, load.batch or default)
        self.work: queue.Queue[tuple[float, list[Any]] | None] = queue.Queue()
        self.errors: list[str] = []
        self.error_count = 0
        self.waits: list[float] = []   # issue -> a worker picks it up (client-side queueing)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, monitor: ResourceMonitor) -> None:
        in_process = isinstance(self.target, InProcessTarget)
        for i in range(self.target.concurrency):
            t = threading.Thread(target=self._work, daemon=True, name=f"rtinfer-load-{i}")
            t.start()
            (monitor.target_tids if in_process else monitor.client_tids).add(t.native_id or 0)
            self._threads.append(t)

    def stop(self) -> None:
        for _ in self._threads:
            self.work.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def issue(self, query_samples: Sequence[Any]) -> None:
        now = time.perf_counter()
        items = list(query_samples)
        for start in range(0, len(items), self.batch):
            self.work.put((now, items[start:start + self.batch]))

    def flush(self) -> None:
        """LoadGen asks to flush pending queries; every query is already queued."""

    def _work(self) -> None:
        while (item := self.work.get()) is not None:
            issued, group = item
            waited = time.perf_counter() - issued
            for feeds, members in _join(self.samples, group):
                try:
                    self.target.run(feeds)
                except Exception as exc:  # a failed request is counted, never hangs LoadGen
                    with self._lock:
                        self.error_count += 1
                        if len(self.errors) < 5:
                            self.errors.append(f"{type(exc).__name__}: {exc}")
                self.lg.QuerySamplesComplete(
                    [self.lg.QuerySampleResponse(s.id, 0, 0) for s in members])
            with self._lock:
                self.waits.append(waited)


def _join(samples: Samples, group: list[Any]) -> list[tuple[dict[str, np.ndarray], list[Any]]]:
    """Samples of one query joined into batches of equal non-batch shapes (no padding)."""
    by_shape: dict[tuple[Any, ...], list[Any]] = {}
    for s in group:
        feeds = samples.items[s.index]
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        by_shape.setdefault(key, []).append(s)
    out = []
    for members in by_shape.values():
        items = [samples.items[s.index] for s in members]
        feeds = items[0] if len(items) == 1 else {
            k: np.concatenate([it[k] for it in items]) for k in items[0]}
        out.append((feeds, members))
    return out


def probe_capacity(target: Target, samples: Samples, seconds: float = 1.0) -> float:
    """Samples/s with ``target.concurrency`` requests always in flight, for ``seconds``.

    Bounded and closed-loop: it sizes LoadGen's offline query (LoadGen builds that one query
    from an expected QPS, and a wrong guess, e.g. with batching or text of many lengths, made
    a 1 s run last minutes) and, in sweeps, where the server-scenario loads start."""
    done = [0] * target.concurrency
    stop = time.perf_counter() + seconds

    def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop:
            target.run(samples.items[i % len(samples)])
            done[w] += 1
            i += target.concurrency

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(target.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def _warm_up(target: Target, samples: Samples, seconds: float = 0.5) -> float:
    """Run samples until ``seconds`` have passed (at least 5 calls); the median call time."""
    times: list[float] = []
    start = time.perf_counter()
    i = 0
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        target.run(samples.items[i % len(samples)])
        times.append(time.perf_counter() - t0)
        i += 1
        if i >= 200:
            break
    return float(np.median(times))


def read_detail_log(path: Path) -> dict[str, Any]:
    """Every ``:::MLLOG`` key of LoadGen's detail log, with its value."""
    found: dict[str, Any] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _MLLOG.search(line)
        if m:
            try:
                entry = json.loads(m.group(1))
            except json.JSONDecodeError:
                continue
            found[entry["key"]] = entry.get("value")
    return found


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-sample issue delay and latency (s), both counted from the scheduled issue time,
    and samples per second from the first schedule to the last completion, read from
    LoadGen's trace (which is not strict JSON, so its lines are matched)."""
    sched, delays, latencies = [], [], []
    with path.open(errors="replace") as f:
        for line in f:
            m = _SAMPLE.search(line)
            if m:
                sched.append(float(m.group(1)) / 1e6)  # trace timestamps are in µs
                delays.append(int(m.group(2)) / 1e9)
                latencies.append(int(m.group(3)) / 1e9)
    lat = np.asarray(latencies)
    span = float(np.max(np.asarray(sched) + lat) - min(sched)) if sched else 0.0
    return np.asarray(delays), lat, (len(lat) / span if span > 0 else 0.0)


def _cdf(seconds: np.ndarray) -> list[list[float]]:
    qs = [*range(0, 100), 99.5, 99.9, 100.0]
    return [[float(q), float(v)] for q, v in
            zip(qs, np.percentile(seconds * 1e3, qs, method="linear"), strict=True)]


def _result(target: Target, samples: Samples, load: LoadSpec, out: Path, usage: dict[str, Any],
            driver: _Driver, warm_s: float, series: str | None) -> dict[str, Any]:
    detail = read_detail_log(out / "mlperf_log_detail.txt")
    trace = out / "mlperf_log_trace.json"
    delays, latencies, rate = read_trace(trace) if trace.is_file() else (
        np.zeros(0), np.zeros(0), 0.0)
    if trace.is_file():  # the trace is ~1.6 kB per sample: keep it, compressed
        with trace.open("rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        trace.unlink()
    lg_valid = detail.get("result_validity") == "VALID"
    reasons = []
    if not lg_valid:
        reasons.append(f"LoadGen: {str(detail.get('result_invalid_reason') or '').strip()}")
        for key, what in (("result_min_duration_met", "minimum duration"),
                          ("result_min_queries_met", "minimum query count"),
                          ("result_perf_constraints_met", "latency bound at p99"),
                          ("early_stopping_met", "early stopping")):
            if detail.get(key) is False:
                reasons.append(f"{what} not met")
    if driver.error_count:
        reasons.append(f"{driver.error_count} requests failed, e.g. {driver.errors[0]}")
    latency = latency_summary(latencies) if latencies.size else None
    delay_p99 = float(np.percentile(delays, 99) * 1e3) if delays.size else None
    warnings = bottleneck_warnings(usage, delay_p99, load.slo_p99_ms)
    waits = np.asarray(driver.waits)
    lg_pct = {k.removeprefix("result_").removesuffix("_percentile_latency_ns"): v / 1e6
              for k, v in detail.items()
              if k.startswith("result_") and k.endswith("percentile_latency_ns")}
    model = None
    if isinstance(target, InProcessTarget):
        m = target.sessions[0].model
        model = {"source": m.source.to_dict(), "path": str(m.path)}
    p99 = latency["p99"] if latency else None
    return {
        "schema": SCHEMA,
        "kind": "loadgen",
        "series": series or target.kind,
        "label": f"{series or target.kind} {load.scenario}"
                 + (f" @ {load.qps:g} QPS" if load.qps else ""),
        "target": target.describe(),
        "model": model,
        "samples": samples.describe(),
        "load": {**asdict(load), "generator": "MLPerf LoadGen "
                 + str(detail.get("loadgen_version", "")),
                 "loop": "open (Poisson arrivals)" if load.scenario == "server" else "closed"
                 if load.scenario != "offline" else "all queries at once",
                 "latency_from": "scheduled issue time", "batch": driver.batch,
                 "concurrency": target.concurrency,
                 "effective_min_query_count": detail.get("effective_min_query_count"),
                 "effective_min_duration_ms": detail.get("effective_min_duration_ms"),
                 "warm_up_median_ms": warm_s * 1e3},
        "objective": {"p99_ms": load.slo_p99_ms},
        "validity": "VALID" if lg_valid and not driver.error_count else "INVALID",
        "valid": lg_valid and not driver.error_count,
        "meets_objective": (p99 <= load.slo_p99_ms) if p99 is not None and load.slo_p99_ms
        else None,
        "invalid_reasons": reasons,
        "loadgen": {"validity": detail.get("result_validity"),
                    "early_stopping": detail.get("early_stopping_result"),
                    "query_count": detail.get("result_query_count"),
                    "overlatency_query_count": detail.get("result_overlatency_query_count"),
                    "percentiles_ms": lg_pct,
                    "estimator": "LoadGen's own (sorted samples, index at the percentile)"},
        "throughput": {"samples_per_s": rate,
                       "note": "samples from the first scheduled issue to the last completion",
                       "loadgen_samples_per_s": detail.get("result_completed_samples_per_sec")
                       or detail.get("result_samples_per_second")
                       or detail.get("result_qps_with_loadgen_overhead"),
                       "scheduled_samples_per_s": detail.get("result_scheduled_samples_per_sec"),
                       "offered_qps": load.qps},
        "latency_ms": latency,
        "cdf_ms": _cdf(latencies) if latencies.size else [],
        "issue_delay_ms": {"p50": float(np.median(delays) * 1e3) if delays.size else None,
                           "p99": delay_p99},
        "client_queue_wait_ms": {"p99": float(np.percentile(waits, 99) * 1e3)
                                 if waits.size else None,
                                 "note": "time queued work waited for a free worker"},
        "errors": {"count": driver.error_count, "examples": driver.errors},
        "resources": usage,
        "warnings": warnings,
        "logs": {"dir": str(out), "files": sorted(p.name for p in out.iterdir()
                                                  if p.name.startswith("mlperf_log"))},
        "environment": environment(),
    }


def _noop(_samples: Any) -> None:
    """QSL load/unload: samples already live in memory."""
