"""Load tests: MLPerf LoadGen drives the closed scenarios, rtinfer's open loop the server one.

    target = open_target("http://127.0.0.1:8000/v2/models/intent")
    result = run_loadgen(target, load_samples(kit="intent"),
                         LoadSpec("server", qps=40, slo_p99_ms=50, duration_s=10), "results/a")
    result["validity"], result["latency_ms"]["p99"]

single-stream, multi-stream and offline run on MLPerf LoadGen: it schedules each query,
counts every latency from the *scheduled* issue time, and judges each run VALID or INVALID by
MLPerf's rules (minimum duration and query count, early stopping). Its logs
(``mlperf_log_summary.txt``, ``_detail.txt``, the trace) are kept in ``out_dir``; rtinfer reads
the verdict from the detail log's ``:::MLLOG`` lines and the per-sample latencies from the
trace, then summarises them with its own named estimator (LoadGen's figures beside them).

The server scenario (open loop, Poisson arrivals at ``qps``) runs on
:mod:`rtinfer.bench.openloop` by the same rules: latency from the scheduled time, p99 within
the bound, LoadGen's early-stopping test. LoadGen's own server scenario builds its whole
schedule first and issues every query of it however late, so a load far past capacity took
``qps x duration / capacity`` seconds and ~460 bytes a query (200,000 QPS for 15 s: 3 M
queries, minutes and GBs); the open loop draws arrivals as they come, stops issuing at the
duration, counts what it could not issue and says INVALID with the capacity it measured.

LoadGen calls ``issue`` on its own thread, holding the GIL, so ``issue`` only queues the work;
``target.concurrency`` worker threads run it and report completion. While a test runs, the
interpreter's thread switch interval is lowered to 0.2 ms (restored afterwards) so the issue
thread (or a worker waking for its next arrival) gets the GIL promptly; the client's own issue
delay is reported all the same.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer._progress import Progress
from rtinfer.bench.inprocess import SCHEMA
from rtinfer.bench.openloop import DRAIN_S, OpenLoopRun, early_stopping_met, run_open_loop
from rtinfer.bench.resources import ResourceMonitor, bottleneck_warnings
from rtinfer.bench.samples import Samples
from rtinfer.bench.stats import latency_summary
from rtinfer.bench.targets import InProcessTarget, Target
from rtinfer.hardware import environment

__all__ = ["SCENARIOS", "LoadSpec", "probe_capacity", "run_loadgen"]

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
_SWITCH_INTERVAL_S = 0.0002
EARLY_STOPPING_MIN = 662  # queries LoadGen's early-stopping rule needs for a p99 claim
DEFAULT_BOUND_MS = 1000.0  # the latency bound without an objective (LoadGen's server default)
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
    """Warm up, run one test of ``load`` against ``target``, return the result dict.

    ``series`` names what is measured (e.g. "rtinfer serve", "kserve"): runs of one series
    at several loads form one line in the report."""
    say = progress or (lambda _msg: None)
    if not samples.items:
        raise ValueError("no samples to send")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say("warm-up")
    warm = _warm_up(target, samples)
    if load.scenario == "server":
        measured = _run_server(target, samples, load, out, say)
    else:
        measured = _run_on_loadgen(target, samples, load, out, warm, say)
    return _result(target, samples, load, out, warm, series, measured)


@dataclass
class _Measured:
    """What one run measured, whichever generator drove it (arrays in seconds)."""

    generator: str
    latencies: np.ndarray     # from the scheduled issue time to the answer
    issue_delays: np.ndarray  # the client's own lateness in issuing
    queue_waits: np.ndarray   # queued work waiting for a free worker
    samples_per_s: float
    throughput_note: str
    reasons: list[str]        # empty: VALID
    errors: int
    error_examples: list[str]
    usage: dict[str, Any]
    batch: int
    load: dict[str, Any] = field(default_factory=dict)      # joins result["load"]
    sections: dict[str, Any] = field(default_factory=dict)  # "loadgen" or "schedule"
    throughput: dict[str, Any] = field(default_factory=dict)
    unserved: int = 0         # scheduled queries never answered (the open loop's)


@contextmanager
def _prompt_gil() -> Iterator[None]:
    # The issue thread (LoadGen's, or a worker waking for its arrival) needs the GIL; with the
    # default 5 ms switch interval a busy worker delays each scheduled issue by up to 5 ms.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)


def _run_server(target: Target, samples: Samples, load: LoadSpec, out: Path,
                say: Progress) -> _Measured:
    bound_s = (load.slo_p99_ms or DEFAULT_BOUND_MS) / 1e3
    min_queries = EARLY_STOPPING_MIN if load.min_queries is None else load.min_queries
    qps = float(load.qps or 1.0)
    monitor = ResourceMonitor(target.pid)
    tids = monitor.target_tids if isinstance(target, InProcessTarget) else monitor.client_tids
    say(f"server: {qps:g} QPS, Poisson arrivals, for {load.duration_s:g} s")
    with _prompt_gil():
        monitor.start()
        try:
            run = run_open_loop(target, samples, qps=qps, duration_s=load.duration_s,
                                bound_s=bound_s, min_queries=min_queries, seed=load.seed,
                                on_thread=lambda t: tids.add(t.native_id or 0))
        finally:
            usage = monitor.stop()
    np.savez_compressed(out / "server_queries.npz", latency_s=run.latencies,
                        queue_wait_s=run.queue_waits, issue_delay_s=run.issue_delays)
    return _Measured(
        generator="rtinfer open loop (Poisson arrivals drawn as they come)",
        latencies=run.latencies, issue_delays=run.issue_delays, queue_waits=run.queue_waits,
        samples_per_s=run.achieved_qps,
        throughput_note="completed queries from the start to the last completion: the "
                        "target's capacity when offered more than it carries",
        reasons=_server_verdict(run, bound_s, min_queries), errors=run.errors,
        error_examples=run.error_examples, usage=usage, batch=1,
        load={"effective_min_query_count": min_queries,
              "effective_min_duration_ms": run.duration_s * 1e3},
        sections={"loadgen": None, "schedule": {
            "offered_qps": qps, "duration_s": run.duration_s, "scheduled": run.scheduled,
            "issued": run.issued, "not_issued": run.not_issued, "late": run.late,
            "late_means": f"sent more than {bound_s * 1e3:g} ms (the bound) after due",
            "completed": run.completed, "unfinished": run.unfinished, "failed": run.errors,
            "achieved_qps": run.achieved_qps,
            "end": f"issuing stops {bound_s * 1e3:g} ms after the duration; calls in flight "
                   f"then get {DRAIN_S:g} s"}},
        throughput={"scheduled_samples_per_s": run.scheduled / run.duration_s},
        unserved=run.unserved)


def _server_verdict(run: OpenLoopRun, bound_s: float, min_queries: int) -> list[str]:
    """LoadGen's server rules on an open-loop run, plus what LoadGen never has to say: that
    scheduled queries were not issued (counted as over the bound)."""
    bound_ms = bound_s * 1e3
    reasons = []
    if run.not_issued or run.unfinished:
        reasons.append(
            f"overloaded: offered {run.qps:,.0f} QPS, achieved {run.achieved_qps:,.1f} QPS "
            f"(the target's capacity at this load); {run.not_issued:,} of "
            f"{run.scheduled:,} scheduled queries not issued, {run.late:,} issued more than "
            f"{bound_ms:g} ms late" + (f", {run.unfinished:,} unanswered after the "
                                       f"{DRAIN_S:g} s drain" if run.unfinished else ""))
    if run.completed < min_queries:
        reasons.append(f"minimum query count not met ({run.completed:,} answered < "
                       f"{min_queries:,})")
    p99_ms = float(np.percentile(run.latencies, 99) * 1e3) if run.completed else None
    if p99_ms is not None and p99_ms > bound_ms:
        reasons.append(f"latency bound at p99 not met: p99 {p99_ms:,.2f} ms > {bound_ms:g} ms"
                       " (answered queries)")
    over = int(np.count_nonzero(run.latencies > bound_s)) + run.unserved
    if not early_stopping_met(run.scheduled, over):
        reasons.append(f"early stopping not met: {over:,} of {run.scheduled:,} queries over "
                       f"{bound_ms:g} ms (not issued, unanswered or failed ones counted as "
                       "over)")
    if run.errors:
        reasons.append(f"{run.errors} requests failed, e.g. {run.error_examples[0]}")
    return reasons


def _run_on_loadgen(target: Target, samples: Samples, load: LoadSpec, out: Path,
                    warm: float, say: Progress) -> _Measured:
    lg = require("mlperf_loadgen", "Load testing with MLPerf LoadGen")
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
    with _prompt_gil():
        monitor.start()
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
        finally:
            usage = monitor.stop()
            driver.stop()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
    return _from_loadgen_logs(out, driver, usage)


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
    warm_ns = max(int(warm_s * 1e9), 1000)
    if load.scenario == "single-stream":
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


def _from_loadgen_logs(out: Path, driver: _Driver, usage: dict[str, Any]) -> _Measured:
    """LoadGen's verdict from its detail log, per-sample figures from its trace."""
    detail = read_detail_log(out / "mlperf_log_detail.txt")
    trace = out / "mlperf_log_trace.json"
    delays, latencies, rate = read_trace(trace) if trace.is_file() else (
        np.zeros(0), np.zeros(0), 0.0)
    if trace.is_file():  # the trace is ~1.6 kB per sample: keep it, compressed
        with trace.open("rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        trace.unlink()
    reasons = []
    if detail.get("result_validity") != "VALID":
        reasons.append(f"LoadGen: {str(detail.get('result_invalid_reason') or '').strip()}")
        for key, what in (("result_min_duration_met", "minimum duration"),
                          ("result_min_queries_met", "minimum query count"),
                          ("result_perf_constraints_met", "latency bound at p99"),
                          ("early_stopping_met", "early stopping")):
            if detail.get(key) is False:
                reasons.append(f"{what} not met")
    if driver.error_count:
        reasons.append(f"{driver.error_count} requests failed, e.g. {driver.errors[0]}")
    lg_pct = {k.removeprefix("result_").removesuffix("_percentile_latency_ns"): v / 1e6
              for k, v in detail.items()
              if k.startswith("result_") and k.endswith("percentile_latency_ns")}
    return _Measured(
        generator="MLPerf LoadGen " + str(detail.get("loadgen_version", "")),
        latencies=latencies, issue_delays=delays, queue_waits=np.asarray(driver.waits),
        samples_per_s=rate, throughput_note="samples from the first scheduled issue to the "
                                            "last completion",
        reasons=reasons, errors=driver.error_count, error_examples=driver.errors,
        usage=usage, batch=driver.batch,
        load={"effective_min_query_count": detail.get("effective_min_query_count"),
              "effective_min_duration_ms": detail.get("effective_min_duration_ms")},
        sections={"loadgen": {
            "validity": detail.get("result_validity"),
            "early_stopping": detail.get("early_stopping_result"),
            "query_count": detail.get("result_query_count"),
            "overlatency_query_count": detail.get("result_overlatency_query_count"),
            "percentiles_ms": lg_pct,
            "estimator": "LoadGen's own (sorted samples, index at the percentile)"}},
        throughput={"loadgen_samples_per_s": detail.get("result_completed_samples_per_sec")
                    or detail.get("result_samples_per_second")
                    or detail.get("result_qps_with_loadgen_overhead"),
                    "scheduled_samples_per_s": detail.get("result_scheduled_samples_per_sec")})


def _p99_ms(seconds: np.ndarray) -> float | None:
    return float(np.percentile(seconds, 99) * 1e3) if seconds.size else None


def _result(target: Target, samples: Samples, load: LoadSpec, out: Path, warm_s: float,
            series: str | None, m: _Measured) -> dict[str, Any]:
    latency = latency_summary(m.latencies) if m.latencies.size else None
    delay_p99 = _p99_ms(m.issue_delays)
    model = None
    if isinstance(target, InProcessTarget):
        src = target.sessions[0].model
        model = {"source": src.source.to_dict(), "path": str(src.path)}
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
        "load": {**asdict(load), "generator": m.generator,
                 "loop": "open (Poisson arrivals)" if load.scenario == "server" else "closed"
                 if load.scenario != "offline" else "all queries at once",
                 "latency_from": "scheduled issue time", "batch": m.batch,
                 "concurrency": target.concurrency, **m.load,
                 "warm_up_median_ms": warm_s * 1e3},
        "objective": {"p99_ms": load.slo_p99_ms},
        "validity": "INVALID" if m.reasons else "VALID",
        "valid": not m.reasons,
        # Queries never answered have no latency: with any of them the answered queries' p99
        # is only a lower bound, and the objective cannot be said to be met.
        "meets_objective": (p99 <= load.slo_p99_ms and not m.unserved)
        if p99 is not None and load.slo_p99_ms else None,
        "invalid_reasons": m.reasons,
        **m.sections,
        "throughput": {"samples_per_s": m.samples_per_s, "note": m.throughput_note,
                       **m.throughput, "offered_qps": load.qps},
        "latency_ms": latency,
        "cdf_ms": _cdf(m.latencies) if m.latencies.size else [],
        "issue_delay_ms": {"p50": float(np.median(m.issue_delays) * 1e3)
                           if m.issue_delays.size else None, "p99": delay_p99},
        "client_queue_wait_ms": {"p99": _p99_ms(m.queue_waits),
                                 "note": "time queued work waited for a free worker"},
        "errors": {"count": m.errors, "examples": m.error_examples},
        "resources": m.usage,
        "warnings": bottleneck_warnings(m.usage, delay_p99, load.slo_p99_ms),
        "logs": {"dir": str(out), "files": sorted(
            p.name for p in out.iterdir() if p.name.startswith(("mlperf_log", "server_")))},
        "environment": environment(),
    }


def _noop(_samples: Any) -> None:
    """QSL load/unload: samples already live in memory."""
