"""Dynamic batching over HTTP: concurrent requests share batches, each gets its own rows back,
a full queue answers 503 with Retry-After and the server keeps serving."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest_helpers import call, infer_concurrently, running
from tritonclient.utils import InferenceServerException

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve import BatchingConfig, create_app, load_repository


def _repo(cnn: ImportedModel, tmp: Path) -> Path:
    rtinfer.save_artifact(cnn, tmp, "cnn")
    return tmp


@pytest.fixture(scope="module")
def batching_server(cnn: ImportedModel,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = load_repository(_repo(cnn, tmp_path_factory.mktemp("repo")), threads=1,
                             overrides={"max_batch_size": 8, "max_queue_delay_us": 50_000})
    app = create_app(models)
    with running(app) as url:
        yield url


def _one(url: str, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer("cnn", [inp]).as_numpy("logits")


def test_concurrent_requests_are_batched_and_answered_row_for_row(
        batching_server: str, cnn: ImportedModel) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1 + i % 2, 3, 32, 32)).astype(np.float32) for i in range(16)]
    # tritonclient's own concurrency (gevent): 16 requests in flight at once.
    got = infer_concurrently(batching_server, "cnn", "image", xs, "logits")
    with rtinfer.load(cnn, threads=1) as s:
        for x, y in zip(xs, got, strict=True):  # every request gets its own rows, in order
            np.testing.assert_allclose(y, s.run({"image": x})["logits"], atol=1e-5)
    with urllib.request.urlopen(f"http://{batching_server}/v2/models/cnn/stats") as r:
        stats = json.loads(r.read())["model_stats"][0]
    assert stats["inference_count"] == sum(len(x) for x in xs)
    assert stats["execution_count"] < len(xs)  # fewer runs than requests: batches formed
    assert max(int(k) for k in stats["batch_sizes"]) <= 8


def test_full_queue_is_503_with_retry_after(cnn: ImportedModel, tmp_path: Path) -> None:
    # The oldest request waits up to 2 s for company; a queue of 2 fills at once.
    models = load_repository(_repo(cnn, tmp_path), threads=1,
                             overrides={"max_batch_size": 64, "max_queue_delay_us": 2_000_000,
                                        "max_queue_size": 2})
    app = create_app(models)
    x = np.zeros((1, 3, 32, 32), np.float32)
    with running(app) as url:
        client = httpclient.InferenceServerClient(url, concurrency=6)
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        pending = [client.async_infer("cnn", [inp]) for _ in range(6)]
        results, rejected = [], []
        for p in pending:
            try:
                results.append(p.get_result())
            except InferenceServerException as exc:
                rejected.append(exc)
        assert rejected and all(e.status() == "503" for e in rejected)
        assert "is busy" in str(rejected[0]) and "retry" in str(rejected[0])
        assert results  # the queued ones were served
        assert _one(url, x).shape == (1, 10)  # and the server still serves


def test_batching_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        BatchingConfig(max_batch_size=0)


def test_request_timeout_fails_alone_with_503(cnn: ImportedModel, tmp_path: Path) -> None:
    models = load_repository(_repo(cnn, tmp_path), threads=1,
                             overrides={"max_batch_size": 8, "max_queue_delay_us": 5_000_000})
    x = np.zeros((1, 3, 32, 32), np.float32)
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}], "parameters": {"timeout": 20_000}}
    with running(create_app(models)) as url:
        status, got = call(url, "/v2/models/cnn/infer", body)
        assert status == 503 and "timed out after" in got["error"]
        with urllib.request.urlopen(f"http://{url}/v2/models/cnn/stats") as r:
            assert json.loads(r.read())["model_stats"][0]["timed_out"] == 1


def test_a_request_timeout_holds_under_uvloop_whose_timers_fire_early(cnn: ImportedModel) -> None:
    # uvloop (uvicorn's loop) counts timers in whole milliseconds and fires them up to 1 ms
    # early: the batcher once took the early wake-up as the timeout's end and ran a request
    # whose own timeout was shorter than the queue delay (a 200 where 503 was due, under load).

    import uvloop

    from rtinfer.serve.batcher import Batcher, QueueTimeoutError

    session = rtinfer.load(cnn, threads=1)
    batcher = Batcher([session], BatchingConfig(max_batch_size=8, max_queue_delay_us=5_000_000))
    x = {"image": np.zeros((1, 3, 32, 32), np.float32)}

    async def tries() -> list[str]:
        outcomes = []
        for i in range(40):  # deadlines that end between libuv's millisecond ticks
            try:
                await batcher.submit(x, timeout_us=2_000 + 137 * (i % 7))
                outcomes.append("ran")
            except QueueTimeoutError:
                outcomes.append("timed out")
        await batcher.stop()
        return outcomes

    with session:
        outcomes = uvloop.run(tries())
    assert outcomes == ["timed out"] * 40
    assert batcher.stats.timed_out == 40 and batcher.stats.batches == 0


def _row_sums(folder: Path) -> Path:
    """A real ONNX model whose second axis is free too: y (batch, 1) = x (batch, n) summed."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "row_sums",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    return folder / "model.onnx"


def test_requests_of_different_shapes_batch_apart(tmp_path: Path) -> None:
    # Rows of length 3 and 5 must not share a batch, and taking one group out of the queue
    # must leave the other queued (a regression: removing a queued request compared the
    # arrays of the requests queued before it, and the worker died).
    rtinfer.save_artifact(rtinfer.import_model(_row_sums(tmp_path / "m")), tmp_path / "repo",
                          "sums")
    models = load_repository(tmp_path / "repo", threads=1,
                             overrides={"max_batch_size": 8, "max_queue_delay_us": 50_000})
    xs = [np.full((1, 3 + 2 * (i % 2)), i, np.float32) for i in range(8)]
    with running(create_app(models)) as url:
        got = infer_concurrently(url, "sums", "x", xs, "y")
        stats = call(url, "/v2/models/sums/stats")[1]["model_stats"][0]
    assert [float(y[0, 0]) for y in got] == [float(x.sum()) for x in xs]
    assert stats["execution_count"] >= 2  # at least one batch per shape
