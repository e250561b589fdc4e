"""Prometheus metrics of the server (``GET /metrics``, text exposition format 0.0.4).

Histograms, not summaries, so that replicas can be aggregated (``histogram_quantile`` over the
summed buckets). Seconds and plain units, as Prometheus names them; Triton's equivalents:

=========================================== ============================================
rtinfer                                     Triton
=========================================== ============================================
rtinfer_request_success_total               nv_inference_request_success
rtinfer_request_failure_total{reason}       nv_inference_request_failure{reason}
rtinfer_inference_count_total (rows)        nv_inference_count
rtinfer_execution_count_total (batches)     nv_inference_exec_count
rtinfer_pending_requests                    nv_inference_pending_request_count
rtinfer_request_duration_seconds (hist.)    nv_inference_request_duration_us (counter)
rtinfer_queue_duration_seconds (hist.)      nv_inference_queue_duration_us
rtinfer_compute_duration_seconds (hist.)    nv_inference_compute_infer_duration_us
rtinfer_batch_size (hist.)                  (statistics extension's batch_stats)
rtinfer_model_load_duration_seconds         nv_model_load_duration_secs
rtinfer_model_ready                         (model readiness)
rtinfer_guard_agreement (hist.)             (none: the online accuracy guard's per-sample score)
rtinfer_guard_samples_total                 (none: rows scored against the reference)
rtinfer_guard_dropped_total                 (none: samples a full shadow queue turned away)
rtinfer_guard_rollbacks_total               (none)
rtinfer_guard_score                         (none: the mean score over the guard's window)
rtinfer_guard_state                         (none: 0 ok or warming, 1 degraded, 2 rolled back)
process_cpu_seconds_total                   nv_cpu_utilization (as a rate)
process_resident_memory_bytes               nv_cpu_memory_used_bytes
=========================================== ============================================

Every model metric carries ``model`` and ``version`` labels. Failure reasons: ``BAD_REQUEST``
(400), ``REJECTED`` (queue full, 503), ``TIMEOUT`` (waited past its deadline), ``UNAVAILABLE``
(unloaded while queued) and ``BACKEND`` (the engine failed, 500).

With several worker processes (``rtinfer serve --workers N``) a scrape reports the whole server,
whichever worker answers it: every worker writes its values to files in a folder they share
(prometheus_client's multiprocess mode) and the scrape merges them. Counters and histograms are
summed over every worker that ever ran. The gauges are merged per gauge, over live workers:
pending requests are summed (``livesum``), a load time is the slowest worker's (``livemax``),
and a version is ready only when every worker that loaded it serves it (``livemin``). Each
worker writes its gauges every 0.5 s (the answering one at the scrape), so another worker's
share may be that old. ``process_*`` metrics are left out: they would describe only the
worker that answered.

On Ray (``rtinfer serve --ray``) each replica pushes its own exposition to a hub (a Ray actor)
every 0.5 s and at each scrape; the replica answering a scrape merges them the same way
(:func:`merge_expositions`): counters and histograms summed over every replica that ever
pushed, gauges over the replicas that pushed in the last 10 s, ``process_*`` left out.
"""

from __future__ import annotations

import bisect
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rtinfer.errors import RtinferError

if TYPE_CHECKING:
    from rtinfer.serve.repository import ModelRepository

__all__ = ["MULTIPROC_ENV", "MetricsHub", "ServerMetrics", "merge_expositions"]

# Latency buckets from 100 us to 10 s: batch-1 requests on a tiny model take well under 1 ms,
# a MiniLM batch of 32 tens of ms, and anything past 10 s is a failure anyway.
_SECONDS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
            2.5, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# A guard's per-sample score: top-1 agreement is 0 or 1; a cosine needs the fine top end.
_SCORES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
_LABELS = ("model", "version")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when first imported
# The gauges read from the repository: name, help, how several workers' values merge.
_GAUGES = (
    ("rtinfer_pending_requests", "Requests queued or running, per model version.", "livesum"),
    ("rtinfer_model_load_duration_seconds", "Seconds to load and warm up the model version.",
     "livemax"),
    ("rtinfer_model_ready", "1 when the model version serves.", "livemin"),
)
# The guards' gauges, for guarded versions only: name, help, merge over workers.
_GUARD_GAUGES = (
    ("rtinfer_guard_score", "Mean score of the guard's window (top-1 agreement or cosine "
     "against the reference).", "livemin"),
    ("rtinfer_guard_state", "The guard's state: 0 ok or warming, 1 degraded, 2 rolled back.",
     "livemax"),
)


class ServerMetrics:
    """The server's metrics in their own registry (two apps in one process never collide), or,
    with ``multiprocess_dir``, in the files every worker process of one server shares."""

    def __init__(self, repository: ModelRepository, multiprocess_dir: Path | None = None,
                 *, hub: MetricsHub | None = None) -> None:
        import prometheus_client as prom  # the serve extra installs it

        self._prom = prom
        self.registry = prom.CollectorRegistry()  # what a scrape reads
        self.shared: _SharedGauges | None = None
        self.hub = hub
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        labels = _LABELS
        # Shared: values live in the folder's files, and the scrape reads only those.
        r = None if multiprocess_dir is not None else self.registry
        self.success = prom.Counter("rtinfer_request_success", "Requests answered with outputs.",
                                    labels, registry=r)
        self.failure = prom.Counter("rtinfer_request_failure", "Requests that failed, by reason.",
                                    (*labels, "reason"), registry=r)
        self.rows = prom.Counter("rtinfer_inference_count",
                                 "Rows (samples) inferred; a batch of 8 counts 8.", labels,
                                 registry=r)
        self.executions = prom.Counter("rtinfer_execution_count", "Batches run by the engine.",
                                       labels, registry=r)
        self.request_time = prom.Histogram(
            "rtinfer_request_duration_seconds",
            "From the request's body being read to its response being encoded.", labels,
            buckets=_SECONDS, registry=r)
        self.queue_time = prom.Histogram("rtinfer_queue_duration_seconds",
                                         "Time a request waited for its batch to start.",
                                         labels, buckets=_SECONDS, registry=r)
        self.compute_time = prom.Histogram("rtinfer_compute_duration_seconds",
                                           "Engine time per batch.", labels, buckets=_SECONDS,
                                           registry=r)
        self.batch_size = prom.Histogram("rtinfer_batch_size", "Rows per executed batch.",
                                         labels, buckets=_ROWS, registry=r)
        self.guard_score = prom.Histogram(
            "rtinfer_guard_agreement", "Per-sample score of the guarded version against its "
            "reference (top-1 agreement 0/1, or cosine).", labels, buckets=_SCORES, registry=r)
        self.guard_samples = prom.Counter("rtinfer_guard_samples",
                                          "Rows the guard scored against the reference.",
                                          labels, registry=r)
        self.guard_dropped = prom.Counter(
            "rtinfer_guard_dropped", "Sampled requests the guard dropped: its queue for the "
            "reference was full.", labels, registry=r)
        self.guard_rollbacks = prom.Counter("rtinfer_guard_rollbacks",
                                            "Rollbacks to the reference version.", labels,
                                            registry=r)
        self._tallies: dict[tuple[str, str], _Tally] = {}
        if multiprocess_dir is not None:
            self.shared = _SharedGauges(repository, prom, multiprocess_dir)
            self.shared.collector(self.registry)
        else:
            self.registry.register(_RepositoryCollector(repository, prom))
            if hub is None:  # merged over replicas, one process's figures would mislead
                prom.ProcessCollector(registry=self.registry)

    def observer(self, model: str, version: str) -> Any:
        """The batch observer for one model version (see :class:`~rtinfer.serve.Batcher`).
        Its series are exported from now on, at zero until something is counted (so that a
        first scrape after load already has them for ``rate()`` and ``absent()``)."""
        tally = self._tally(model, version)

        def observe(rows: int, waits: list[float], compute_s: float) -> None:
            for wait in waits:
                tally.queue.add(wait)
            tally.compute.add(compute_s)
            tally.size.add(rows)
            tally.rows += rows
            tally.executions += 1
            if self.shared is not None:  # another worker may answer the next scrape
                tally.drain()

        return observe

    def guard(self, model: str, version: str) -> _GuardMetrics:
        """The guard observer for one guarded model version."""
        return _GuardMetrics(self.guard_score.labels(model, version),
                             self.guard_samples.labels(model, version),
                             self.guard_dropped.labels(model, version),
                             self.guard_rollbacks.labels(model, version))

    def request(self, model: str, version: str, seconds: float, failure: str | None) -> None:
        if failure is None:
            tally = self._tally(model, version)
            tally.success += 1
            tally.request.add(seconds)
            if self.shared is not None:
                tally.drain()
        else:
            self.failure.labels(model, version, failure).inc()

    def _tally(self, model: str, version: str) -> _Tally:
        tally = self._tallies.get((model, version))
        if tally is None:  # labels() costs a lock and a lookup: once per version
            tally = self._tallies[(model, version)] = _Tally(self, model, version)
        return tally

    def flush(self) -> None:
        """Move the figures counted since the last flush into prometheus_client's metrics
        (every scrape, share and refresh does this first)."""
        for tally in self._tallies.values():
            tally.drain()

    def refresh(self) -> None:
        """Write this worker's figures for the others' scrapes (shared mode; else a flush)."""
        self.flush()
        if self.shared is not None:
            self.shared.refresh()

    async def share(self) -> None:
        """Give this worker's (or replica's) values to the others: its gauges to the shared
        files, or its whole exposition to the hub."""
        self.refresh()
        if self.hub is not None:
            await self.hub.push(self.replica, self._prom.generate_latest(self.registry).decode())

    def close(self) -> None:
        """This worker is stopping: its last figures are written and its gauges leave the
        shared files (shared mode)."""
        self.flush()
        if self.shared is not None:
            self.shared.close()

    def exposition(self) -> tuple[bytes, str]:
        """The metrics as Prometheus text, and its content type."""
        self.flush()
        if self.shared is not None:
            self.shared.refresh()
            self.shared.forget_dead_workers()
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    async def exposition_async(self) -> tuple[bytes, str]:
        """The metrics as Prometheus text: with a hub, every replica's merged."""
        if self.hub is None:
            return self.exposition()
        await self.share()  # this replica's figures as of now, then everyone's
        merged = merge_expositions(await self.hub.pull())
        return merged, self._prom.CONTENT_TYPE_LATEST


class MetricsHub(Protocol):
    """Where the replicas of one server on Ray leave their expositions for each other's
    scrapes (:mod:`rtinfer.scale.ray_serve`): ``pull`` gives each replica's latest text and
    whether that replica still pushes."""

    async def push(self, replica: str, text: str) -> None: ...

    async def pull(self) -> list[tuple[str, bool]]: ...


def merge_expositions(expositions: list[tuple[str, bool]]) -> bytes:
    """Several replicas' Prometheus texts as one: counters and histograms summed over every
    replica that ever pushed, gauges merged over the live ones as ``_GAUGES`` says (as the
    multiprocess mode of ``--workers`` merges them)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    modes = {name: mode for name, _, mode in (*_GAUGES, *_GUARD_GAUGES)}
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    for text, live in expositions:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created") or (family.type == "gauge" and not live):
                continue  # creation times do not add up; a gone replica's gauges are gone
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type)
            into = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                into.setdefault(key, []).append(sample.value)
    for name, metric in merged.items():
        mode = modes.get(name, "livesum") if metric.type == "gauge" else "sum"
        for (sample_name, labels), seen in values[name].items():
            value = max(seen) if mode == "livemax" else min(seen) if mode == "livemin" \
                else sum(seen)
            metric.add_sample(sample_name, dict(labels), value)

    class _Merged:
        def collect(self) -> Iterator[Any]:
            return iter(merged.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


class _Histogram:
    """A histogram's observations since the last drain, a count per bucket (the last is
    +Inf) and their sum, and the prometheus_client child of the same buckets they go to."""

    __slots__ = ("bounds", "child", "counts", "sum")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        if len(child._buckets) != len(bounds) + 1:
            raise RuntimeError(f"histogram has {len(child._buckets)} buckets, expected "
                               f"{len(bounds) + 1}")
        self.child, self.bounds = child, bounds
        self.counts, self.sum = [0] * (len(bounds) + 1), 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: the bound counts
        self.sum += value

    def drain(self) -> None:
        """Add the observations to the child, as ``child.observe`` would have for each, and
        start again from none."""
        if not any(self.counts):
            return
        # No public call adds n observations to a bucket.
        for i, (bucket, count) in enumerate(zip(self.child._buckets, self.counts,
                                                strict=True)):
            if count:
                bucket.inc(count)
                self.counts[i] = 0
        self.child._sum.inc(self.sum)
        self.sum = 0.0


class _Tally:
    """One model version's figures since the last drain, as plain numbers, beside the
    prometheus_client children (labelled once) they are drained into.

    The request path adds here (well under a microsecond); prometheus_client's objects take
    a lock and walk the buckets on every call (measured: about 10 us a request over the nine
    calls a request makes), so :meth:`ServerMetrics.flush` drains every tally in bulk at each
    scrape (and every 0.5 s where Ray replicas share them). Worker processes drain at once:
    their files are what another worker's scrape reads. Counted on the event loop's thread
    only, as the routes and the batcher do. Labelling the children exports the version's
    series at zero from the start.
    """

    __slots__ = ("_counters", "compute", "executions", "queue", "request", "rows", "size",
                 "success")

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        self.success = self.rows = self.executions = 0
        self._counters = tuple(m.labels(model, version) for m in (
            metrics.success, metrics.rows, metrics.executions))
        self.request = _Histogram(metrics.request_time.labels(model, version), _SECONDS)
        self.queue = _Histogram(metrics.queue_time.labels(model, version), _SECONDS)
        self.compute = _Histogram(metrics.compute_time.labels(model, version), _SECONDS)
        self.size = _Histogram(metrics.batch_size.labels(model, version), _ROWS)

    def drain(self) -> None:
        for child, count in zip(self._counters, (self.success, self.rows, self.executions),
                                strict=True):
            if count:
                child.inc(count)
        self.success = self.rows = self.executions = 0
        for hist in (self.request, self.queue, self.compute, self.size):
            hist.drain()


class _GuardMetrics:
    """A guard's counters and histogram (see :class:`rtinfer.serve.guard.GuardObserver`)."""

    def __init__(self, score: Any, samples: Any, dropped: Any, rollbacks: Any) -> None:
        self._score, self._samples = score, samples
        self._dropped, self._rollbacks = dropped, rollbacks

    def scored(self, score: float) -> None:
        self._score.observe(score)
        self._samples.inc()

    def dropped(self) -> None:
        self._dropped.inc()

    def rolled_back(self) -> None:
        self._rollbacks.inc()


def _gauge_values(repository: ModelRepository
                  ) -> Iterator[tuple[tuple[str, str], tuple[float, ...]]]:
    """(model, version) and its values for each of ``_GAUGES``, per served version."""
    for served in repository.models():
        yield (served.name, served.version), (served.batcher.pending, served.load_seconds, 1)


def _guard_values(repository: ModelRepository
                  ) -> Iterator[tuple[tuple[str, str], tuple[float, ...]]]:
    """(model, version) and its values for each of ``_GUARD_GAUGES``, per guarded version
    (a guard without a score yet reports 1: nothing disagreed)."""
    from rtinfer.serve.guard import STATES

    for served in repository.models():
        guard = served.guard
        if guard is not None:
            score = guard.score
            yield (served.name, served.version), (1.0 if score is None else score,
                                                  STATES[guard.state])


class _RepositoryCollector:
    """Gauges read from the repository when scraped: pending requests, load time, readiness."""

    def __init__(self, repository: ModelRepository, prom: Any) -> None:
        self.repository = repository
        from prometheus_client.core import GaugeMetricFamily

        self.family = GaugeMetricFamily

    def collect(self) -> Iterator[Any]:
        for gauges, values in ((_GAUGES, _gauge_values), (_GUARD_GAUGES, _guard_values)):
            families = [self.family(name, doc, labels=list(_LABELS)) for name, doc, _ in gauges]
            for key, row in values(self.repository):
                for family, value in zip(families, row, strict=True):
                    family.add_metric(list(key), value)
            yield from families


class _SharedGauges:
    """The same gauges in prometheus_client's multiprocess mode: written by each worker,
    merged at the scrape as ``_GAUGES`` says."""

    def __init__(self, repository: ModelRepository, prom: Any, folder: Path) -> None:
        from prometheus_client import values

        if values.ValueClass is values.MutexValue or \
                os.environ.get(MULTIPROC_ENV) != str(folder):
            raise RtinferError(f"metrics shared by worker processes need {MULTIPROC_ENV}="
                               f"{folder} set before prometheus_client is first imported "
                               "(rtinfer serve --workers does this for its workers)")
        self.repository = repository
        self.folder = folder
        # Each group: its gauges, where their values come from, what a version no longer
        # reported here writes (not served here: 0; no longer guarded: healthy, not stale),
        # and the versions written so far.
        self.groups: list[tuple[list[Any], Any, tuple[float, ...], set[tuple[str, str]]]] = [
            ([prom.Gauge(name, doc, _LABELS, registry=None, multiprocess_mode=mode)
              for name, doc, mode in gauges], values, absent, set())
            for gauges, values, absent in ((_GAUGES, _gauge_values, (0, 0, 0)),
                                           (_GUARD_GAUGES, _guard_values, (1.0, 0)))]

    def collector(self, registry: Any) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=str(self.folder))

    def refresh(self) -> None:
        for gauges, values, absent, written in self.groups:
            current: dict[tuple[str, str], tuple[float, ...]] = dict(values(self.repository))
            for key in written - set(current):  # retired, unloaded or unguarded here
                current[key] = absent
            for key, row in current.items():
                for gauge, value in zip(gauges, row, strict=True):
                    gauge.labels(*key).set(value)
            written |= set(current)

    def forget_dead_workers(self) -> None:
        """Drop the live gauges of workers that died without :meth:`close` (killed)."""
        import psutil
        from prometheus_client.multiprocess import mark_process_dead

        for path in self.folder.glob("gauge_live*_*.db"):  # gauge_<mode>_<pid>.db
            pid = path.stem.rsplit("_", 1)[1]
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                mark_process_dead(int(pid), str(self.folder))

    def close(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid(), str(self.folder))

