"""Prometheus /metrics: histograms and counters that agree with the traffic sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest_helpers import call, running
from prometheus_client.parser import text_string_to_metric_families

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve import create_app, load_repository


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_happened(cnn: ImportedModel, tmp_path: Path) -> None:
    rtinfer.save_artifact(cnn, tmp_path, "cnn")
    app = create_app(load_repository(tmp_path, threads=1,
                                     overrides={"max_batch_size": 8,
                                                "max_queue_delay_us": 20_000}))
    x = np.zeros((2, 3, 32, 32), np.float32)
    mv = (("model", "cnn"), ("version", "1"))
    with running(app) as url:
        # a loaded version's series are there at zero before its first request
        before = _samples(call(url, "/metrics")[1].decode())
        for name in ("rtinfer_request_success_total", "rtinfer_inference_count_total",
                     "rtinfer_execution_count_total", "rtinfer_queue_duration_seconds_count",
                     "rtinfer_batch_size_count", "rtinfer_request_duration_seconds_count"):
            assert before[(name, mv)] == 0, name
        client = httpclient.InferenceServerClient(url, concurrency=6)
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        for p in [client.async_infer("cnn", [inp]) for _ in range(6)]:
            p.get_result()
        assert call(url, "/v2/models/cnn/infer", {"inputs": []})[0] == 400
        status, text = call(url, "/metrics")
    assert status == 200
    samples = _samples(text.decode())
    assert samples[("rtinfer_request_success_total", mv)] == 6
    bad = (("model", "cnn"), ("reason", "BAD_REQUEST"), ("version", "1"))  # labels sorted
    assert samples[("rtinfer_request_failure_total", bad)] == 1
    assert samples[("rtinfer_inference_count_total", mv)] == 12  # rows, not requests
    batches = samples[("rtinfer_execution_count_total", mv)]
    assert 1 <= batches < 6
    assert samples[("rtinfer_request_duration_seconds_count", mv)] == 6
    assert samples[("rtinfer_queue_duration_seconds_count", mv)] == 6
    assert samples[("rtinfer_compute_duration_seconds_count", mv)] == batches
    assert samples[("rtinfer_batch_size_sum", mv)] == 12
    # cumulative buckets: the +Inf bucket holds every observation
    assert samples[("rtinfer_request_duration_seconds_bucket", (("le", "+Inf"), *mv))] == 6
    assert samples[("rtinfer_pending_requests", mv)] == 0
    assert samples[("rtinfer_model_load_duration_seconds", mv)] > 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("process_cpu_seconds_total", ()) in samples


def test_replicas_expositions_merge_as_workers_do() -> None:
    """Ray replicas' metrics (rtinfer serve --ray): counters and histogram buckets summed over
    every replica that pushed, gauges over the live ones by each gauge's rule."""
    from prometheus_client.parser import text_string_to_metric_families

    from rtinfer.serve.metrics import merge_expositions

    def exposition(success: float, bucket: float, pending: float, ready: float) -> str:
        return (
            "# HELP rtinfer_request_success_total Requests.\n"
            "# TYPE rtinfer_request_success_total counter\n"
            f'rtinfer_request_success_total{{model="m",version="1"}} {success}\n'
            "# HELP rtinfer_request_success_created Requests.\n"
            "# TYPE rtinfer_request_success_created gauge\n"
            'rtinfer_request_success_created{model="m",version="1"} 1.7e9\n'
            "# HELP rtinfer_batch_size Rows.\n# TYPE rtinfer_batch_size histogram\n"
            f'rtinfer_batch_size_bucket{{le="1.0",model="m",version="1"}} {bucket}\n'
            f'rtinfer_batch_size_bucket{{le="+Inf",model="m",version="1"}} {bucket + 1}\n'
            f'rtinfer_batch_size_count{{model="m",version="1"}} {bucket + 1}\n'
            f'rtinfer_batch_size_sum{{model="m",version="1"}} {bucket + 4}\n'
            "# HELP rtinfer_pending_requests Pending.\n# TYPE rtinfer_pending_requests gauge\n"
            f'rtinfer_pending_requests{{model="m",version="1"}} {pending}\n'
            "# HELP rtinfer_model_ready Ready.\n# TYPE rtinfer_model_ready gauge\n"
            f'rtinfer_model_ready{{model="m",version="1"}} {ready}\n')

    merged = merge_expositions([(exposition(3, 2, 1, 1), True), (exposition(5, 1, 4, 0), True),
                                (exposition(7, 9, 50, 0), False)]).decode()
    values = {(s.name, s.labels.get("le")): s.value
              for f in text_string_to_metric_families(merged) for s in f.samples}
    assert values[("rtinfer_request_success_total", None)] == 15  # a gone replica's count stays
    assert values[("rtinfer_batch_size_bucket", "1.0")] == 12
    assert values[("rtinfer_batch_size_bucket", "+Inf")] == 15
    assert values[("rtinfer_batch_size_count", None)] == 15
    assert values[("rtinfer_pending_requests", None)] == 5     # live ones summed
    assert values[("rtinfer_model_ready", None)] == 0           # ready only where all serve
    assert "_created" not in merged


def test_counted_figures_reach_prometheus_as_observe_would_put_them() -> None:
    """The request path counts in plain numbers and a flush adds them to prometheus_client's
    histograms in bulk: the exposition must be what observing each value would give, bucket
    bounds included (``le`` counts a value equal to the bound)."""
    import prometheus_client as prom

    from rtinfer.serve.metrics import _SECONDS, _Histogram

    values = [0.0, 1e-4, 2.5e-4, 3e-4, 0.5, 10.0, 11.0, 7e-5, 2.5e-3, 2.5e-3]
    registry = prom.CollectorRegistry()
    bulk = prom.Histogram("bulk", "", ("m",), buckets=_SECONDS, registry=registry)
    each = prom.Histogram("each", "", ("m",), buckets=_SECONDS, registry=registry)
    hist = _Histogram(bulk.labels("a"), _SECONDS)
    for _ in range(2):  # twice: the counts add up, and a drain starts again from none
        for v in values:
            hist.add(v)
            each.labels("a").observe(v)
        hist.drain()
    hist.drain()  # nothing counted since: nothing added
    families = {f.name: f for f in text_string_to_metric_families(
        prom.generate_latest(registry).decode())}

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name.removeprefix(name), s.labels, s.value) for s in families[name].samples
                if not s.name.endswith("_created")]

    bulk_s, each_s = samples("bulk"), samples("each")
    assert [s for s in bulk_s if s[0] != "_sum"] == [s for s in each_s if s[0] != "_sum"]
    assert [s[2] for s in bulk_s if s[0] == "_sum"] == pytest.approx(
        [s[2] for s in each_s if s[0] == "_sum"])  # summed in another order
    assert ("_count", {"m": "a"}, 2.0 * len(values)) in bulk_s
