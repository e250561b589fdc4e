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
process_cpu_seconds_total                   nv_cpu_utilization (as a rate)
process_resident_memory_bytes               nv_cpu_memory_used_bytes
=========================================== ============================================

Every model metric carries ``model`` and ``version`` labels. Failure reasons: ``BAD_REQUEST``
(400), ``REJECTED`` (queue full, 503), ``TIMEOUT`` (waited past its deadline), ``UNAVAILABLE``
(unloaded while queued) and ``BACKEND`` (the engine failed, 500).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtinfer.serve.repository import ModelRepository

__all__ = ["ServerMetrics"]

# Latency buckets from 100 us to 10 s: batch-1 requests on a tiny model take well under 1 ms,
# a MiniLM batch of 32 tens of ms, and anything past 10 s is a failure anyway.
_SECONDS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
            2.5, 10.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The server's metrics in their own registry (two apps in one process never collide)."""

    def __init__(self, repository: ModelRepository) -> None:
        import prometheus_client as prom  # the serve extra installs it

        self._prom = prom
        self.registry = prom.CollectorRegistry()
        labels = ("model", "version")
        r = self.registry
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
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        r.register(_RepositoryCollector(repository, prom))
        prom.ProcessCollector(registry=r)

    def observer(self, model: str, version: str) -> Any:
        """The batch observer for one model version (see :class:`~rtinfer.serve.Batcher`)."""
        queue = self.queue_time.labels(model, version)
        compute = self.compute_time.labels(model, version)
        size = self.batch_size.labels(model, version)
        rows_c, execs = self.rows.labels(model, version), self.executions.labels(model, version)

        def observe(rows: int, waits: list[float], compute_s: float) -> None:
            for wait in waits:
                queue.observe(wait)
            compute.observe(compute_s)
            size.observe(rows)
            rows_c.inc(rows)
            execs.inc()

        return observe

    def request(self, model: str, version: str, seconds: float, failure: str | None) -> None:
        if failure is None:
            key = (model, version)
            children = self._children.get(key)
            if children is None:  # labels() costs a lock and a lookup: once per version
                children = self._children[key] = (self.success.labels(model, version),
                                                   self.request_time.labels(model, version))
            children[0].inc()
            children[1].observe(seconds)
        else:
            self.failure.labels(model, version, failure).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The metrics as Prometheus text, and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class _RepositoryCollector:
    """Gauges read from the repository when scraped: pending requests, load time, readiness."""

    def __init__(self, repository: ModelRepository, prom: Any) -> None:
        self.repository = repository
        from prometheus_client.core import GaugeMetricFamily

        self.family = GaugeMetricFamily

    def collect(self) -> Iterator[Any]:
        labels = ["model", "version"]
        pending = self.family("rtinfer_pending_requests",
                              "Requests queued or running, per model version.", labels=labels)
        load = self.family("rtinfer_model_load_duration_seconds",
                           "Seconds to load and warm up the model version.", labels=labels)
        ready = self.family("rtinfer_model_ready", "1 when the model version serves.",
                            labels=labels)
        for served in self.repository.models():
            key = [served.name, served.version]
            pending.add_metric(key, served.batcher.pending)
            load.add_metric(key, served.load_seconds)
            ready.add_metric(key, 1)
        yield from (pending, load, ready)
