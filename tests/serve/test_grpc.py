"""KServe v2 over gRPC, spoken to by Triton's own gRPC clients (sync, streaming and asyncio)
against a real server on a free loopback port, on the same batchers as HTTP."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from conftest_helpers import call, running
from hostile_models import EMBEDDING, build_repository
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

KEY = "grpc-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(HTTP host:port, gRPC host:port) of one app."""
    from rtinfer.serve import create_app, load_repository

    repo = build_repository(tmp_path_factory.mktemp("grpc") / "repo")
    app = create_app(load_repository(repo), api_key=KEY, grpc_port=0, max_body_bytes=1 << 20)
    with running(app) as url:
        yield url, f"127.0.0.1:{app.state.grpc_port}"


@pytest.fixture(scope="module")
def client(servers: tuple[str, str]) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(servers[1])


def _inputs(rows: int = 1, ids: list[int] | None = None) -> tuple[list[Any], dict[str, Any]]:
    x = np.arange(4 * rows, dtype=np.float32).reshape(rows, 4)
    arrays = {"x": x, "ids": np.array([ids or [0, 1, 9]] * rows, np.int64),
              "q": np.array([[-128, 127]] * rows, np.int8),
              "u": np.array([[0, 255]] * rows, np.uint8)}
    inputs = []
    for name, array in arrays.items():
        inp = grpcclient.InferInput(name, list(array.shape),
                                    {"float32": "FP32", "int64": "INT64", "int8": "INT8",
                                     "uint8": "UINT8"}[array.dtype.name])
        inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs, arrays


def _check(result: Any, arrays: dict[str, Any]) -> None:
    np.testing.assert_array_equal(result.as_numpy("y"), arrays["x"] * 2)
    np.testing.assert_array_equal(result.as_numpy("e"), EMBEDDING[arrays["ids"]])
    np.testing.assert_array_equal(result.as_numpy("qu"), arrays["q"].astype(np.float32)
                                  + arrays["u"].astype(np.float32))


def test_health_metadata_config_and_repository(client: grpcclient.InferenceServerClient
                                               ) -> None:
    assert client.is_server_live() and client.is_server_ready()  # no key needed
    assert client.is_model_ready("mixed", headers=AUTH)
    assert not client.is_model_ready("nope", headers=AUTH)
    meta = client.get_server_metadata(headers=AUTH)
    assert meta.name == "rtinfer" and "binary_tensor_data" in meta.extensions
    model = client.get_model_metadata("mixed", headers=AUTH, as_json=True)
    assert model["versions"] == ["1"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in model["inputs"]} == {
        "x": ("FP32", ["-1", "4"]), "ids": ("INT64", ["-1", "3"]), "q": ("INT8", ["-1", "2"]),
        "u": ("UINT8", ["-1", "2"])}
    config = client.get_model_config("mixed", headers=AUTH, as_json=True)["config"]
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == ["4"]
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {m["name"] for m in index} == {"mixed", "strings"}
    client.unload_model("strings", headers=AUTH)
    assert not client.is_model_ready("strings", headers=AUTH)
    client.load_model("strings", headers=AUTH)
    assert client.is_model_ready("strings", headers=AUTH)
    with pytest.raises(InferenceServerException, match="name") as info:
        client.load_model("..", headers=AUTH)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_infer_matches_the_model(client: grpcclient.InferenceServerClient) -> None:
    inputs, arrays = _inputs(rows=3)
    result = client.infer("mixed", inputs, headers=AUTH, request_id="r-7",
                          outputs=[grpcclient.InferRequestedOutput("y"),
                                   grpcclient.InferRequestedOutput("e"),
                                   grpcclient.InferRequestedOutput("qu")])
    assert result.get_response().id == "r-7"
    _check(result, arrays)
    result = client.infer("mixed", inputs, model_version="1", headers=AUTH)
    _check(result, arrays)


def test_bytes_round_trip(client: grpcclient.InferenceServerClient) -> None:
    texts = np.array([b"hello", "héllo".encode(), b"", "打开客厅的灯".encode()],
                     dtype=object)
    inp = grpcclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(texts)
    result = client.infer("strings", [inp], headers=AUTH)
    assert list(result.as_numpy("echo")) == list(texts)
    assert result.as_numpy("n").tolist() == [len(texts)]


def test_typed_contents_are_checked_like_json(servers: tuple[str, str]) -> None:
    """Typed ``contents`` (not raw buffers), sent with the generated stub."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(servers[1]))
    metadata = tuple(AUTH.items())

    def request(q: list[int]) -> Any:
        req = service_pb2.ModelInferRequest(model_name="mixed")
        for name, datatype, shape, field, values in (
                ("x", "FP32", [1, 4], "fp32_contents", [1, 2, 3, 4]),
                ("ids", "INT64", [1, 3], "int64_contents", [0, 1, 2]),
                ("q", "INT8", [1, 2], "int_contents", q),
                ("u", "UINT8", [1, 2], "uint_contents", [1, 2])):
            tensor = req.inputs.add(name=name, datatype=datatype, shape=shape)
            getattr(tensor.contents, field).extend(values)
        return req

    answer = stub.ModelInfer(request([3, -4]), metadata=metadata)
    qu = np.frombuffer(answer.raw_output_contents[[o.name for o in answer.outputs]
                                                  .index("qu")], np.float32)
    assert qu.tolist() == [4.0, -2.0]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request([300, 0]), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'q'" in info.value.details() and "range of INT8" in info.value.details()


@pytest.mark.parametrize(("change", "code", "words"), [
    ("dtype", "INVALID_ARGUMENT", "input 'x' is FP32 for this model"),
    ("shape", "INVALID_ARGUMENT", "input 'x'"),
    ("missing", "INVALID_ARGUMENT", "missing input"),
    ("ids", "INVALID_ARGUMENT", "rejected the input values"),
    ("model", "NOT_FOUND", "unknown model 'nope'"),
    ("version", "NOT_FOUND", "no ready version 5"),
    ("output", "INVALID_ARGUMENT", "zz"),
    ("key", "UNAUTHENTICATED", "API key"),
])
def test_errors_map_to_status_codes(client: grpcclient.InferenceServerClient, change: str,
                                    code: str, words: str) -> None:
    inputs, _ = _inputs(ids=[0, 1, 99] if change == "ids" else None)
    if change == "dtype":
        inputs[0] = grpcclient.InferInput("x", [1, 4], "FP64")
        inputs[0].set_data_from_numpy(np.zeros((1, 4), np.float64))
    if change == "shape":
        inputs[0] = grpcclient.InferInput("x", [1, 5], "FP32")
        inputs[0].set_data_from_numpy(np.zeros((1, 5), np.float32))
    if change == "missing":
        inputs = inputs[1:]
    kwargs: dict[str, Any] = {"headers": {} if change == "key" else AUTH}
    if change == "version":
        kwargs["model_version"] = "5"
    if change == "output":
        kwargs["outputs"] = [grpcclient.InferRequestedOutput("zz")]
    with pytest.raises(InferenceServerException, match=words) as info:
        client.infer("nope" if change == "model" else "mixed", inputs, **kwargs)
    assert info.value.status() == f"StatusCode.{code}"


def test_sixteen_concurrent_requests_are_batched(servers: tuple[str, str]) -> None:
    client = grpcclient.InferenceServerClient(servers[1])
    before = client.get_inference_statistics("mixed", headers=AUTH, as_json=True)
    stats0 = before["model_stats"][0]
    done: queue.Queue[Any] = queue.Queue()
    sent = []
    for i in range(16):
        inputs, arrays = _inputs(ids=[i % 10, 1, 2])
        sent.append(arrays)
        client.async_infer("mixed", inputs, callback=lambda result, error, i=i: done.put(
            (i, result, error)),
                           headers=AUTH)
    results = [done.get(timeout=60) for _ in range(16)]
    for i, result, error in results:
        assert error is None, error
        _check(result, sent[i])
    stats = client.get_inference_statistics("mixed", headers=AUTH, as_json=True)[
        "model_stats"][0]
    rows = int(stats.get("inference_count", 0)) - int(stats0.get("inference_count", 0))
    batches = int(stats.get("execution_count", 0)) - int(stats0.get("execution_count", 0))
    assert rows == 16 and batches < 16, (rows, batches)  # 20 ms queue delay: they shared


def test_streaming_answers_in_order(servers: tuple[str, str]) -> None:
    client = grpcclient.InferenceServerClient(servers[1])
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)),
                        headers=AUTH)
    try:
        for i in range(6):
            inputs, _ = _inputs(ids=[i, 0, 99] if i == 3 else [i, 0, 0])
            client.async_stream_infer("mixed", inputs, request_id=str(i))
        got = [answers.get(timeout=60) for _ in range(6)]
    finally:
        client.stop_stream()
    ids = []
    for i, (result, error) in enumerate(got):
        if i == 3:
            assert error is not None and "rejected the input values" in str(error)
            continue
        assert error is None, error
        ids.append(result.get_response().id)
        assert result.as_numpy("e")[0, 0].tolist() == EMBEDDING[i].tolist()
    assert ids == ["0", "1", "2", "4", "5"]


def test_asyncio_client(servers: tuple[str, str]) -> None:
    async def main() -> Any:
        client = aioclient.InferenceServerClient(servers[1])
        try:
            inputs, arrays = _inputs(rows=2)
            aio_inputs = []
            for inp in inputs:
                a = aioclient.InferInput(inp.name(), inp.shape(), inp.datatype())
                a.set_data_from_numpy(arrays[inp.name()])
                aio_inputs.append(a)
            return await client.infer("mixed", aio_inputs, headers=AUTH), arrays
        finally:
            await client.close()

    result, arrays = asyncio.run(main())
    _check(result, arrays)


def test_metrics_count_grpc_and_http_alike(servers: tuple[str, str],
                                           client: grpcclient.InferenceServerClient) -> None:
    def successes() -> float:
        text = call(servers[0], "/metrics", headers={"X-API-Key": KEY})[1].decode()
        line = next(ln for ln in text.splitlines() if ln.startswith(
            'rtinfer_request_success_total{model="mixed"'))
        return float(line.rsplit(" ", 1)[1])

    before = successes()
    inputs, _ = _inputs()
    client.infer("mixed", inputs, headers=AUTH)
    assert successes() == before + 1


def test_message_limit_follows_the_body_limit(client: grpcclient.InferenceServerClient
                                              ) -> None:
    x = np.zeros((70_000, 4), np.float32)  # 1.1 MB against the 1 MiB limit
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("mixed", [inp], headers=AUTH)
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_cli_serves_grpc(tmp_path: Path) -> None:
    from conftest_helpers import serve_process, wait_ready

    from rtinfer.serve.inthread import free_port

    repo = build_repository(tmp_path / "repo")
    port, gport = free_port(), free_port()
    with serve_process(str(repo), "--port", str(port), "--grpc-port", str(gport)) as proc:
        wait_ready(f"127.0.0.1:{port}", proc)
        _no_server_header(port)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{gport}")
        inputs, arrays = _inputs()
        _check(client.infer("mixed", inputs), arrays)


def _no_server_header(port: int) -> None:
    """``rtinfer serve`` does not name its HTTP stack (uvicorn's ``server`` header is off)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/v2/health/ready")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 200 and response.getheader("server") is None
    assert response.getheader("date") is not None  # RFC 9110: an origin server sends Date


@pytest.mark.slow
def test_workers_serve_grpc_and_stop_with_status_0(tmp_path: Path) -> None:
    import signal

    from conftest_helpers import serve_process, wait_ready

    from rtinfer.serve.inthread import free_port

    repo = build_repository(tmp_path / "repo")
    port, gport = free_port(), free_port()
    with serve_process(str(repo), "--port", str(port), "--grpc-port", str(gport),
                       "--workers", "2", "--threads", "1") as proc:
        wait_ready(f"127.0.0.1:{port}", proc)
        _no_server_header(port)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{gport}")
        for rows in range(1, 9):  # new channels land on either worker (SO_REUSEPORT)
            inputs, arrays = _inputs(rows=rows)
            _check(client.infer("mixed", inputs), arrays)
            client.close()
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{gport}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_a_taken_grpc_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from rtinfer.errors import RtinferError
    from rtinfer.serve import load_repository
    from rtinfer.serve.grpc_server import GrpcServer

    repo = load_repository(build_repository(tmp_path / "repo"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = GrpcServer(repo, None, repo, port=taken.getsockname()[1])
        with pytest.raises(RtinferError, match="is the port taken"):
            asyncio.run(server.start())


def test_kit_raw_inputs_over_grpc(fraud_kit: Any, tmp_path: Path) -> None:
    """A kit's raw form (one input per field, text fields as BYTES) works as over HTTP."""
    import json
    import shutil

    import rtinfer
    from rtinfer.kits.fraud import FIELDS
    from rtinfer.serve import create_app, load_repository

    shutil.copytree(fraud_kit.models["fraud-mlp"].parent, tmp_path / "repo" / "fraud-mlp")
    (tmp_path / "repo" / "fraud-mlp" / "rtinfer.json").write_text(json.dumps(
        {"kit": "fraud", "kit_size": "small", "threads": 1}))
    raw = fraud_kit.split("test").raw
    records = [{f: raw[f][i].item() for f in FIELDS} for i in range(3)]
    with rtinfer.load(fraud_kit.models["fraud-mlp"], threads=1) as session:
        want = session.run(fraud_kit.preprocess(records))["probabilities"]
    app = create_app(load_repository(tmp_path / "repo"), grpc_port=0)
    with running(app):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        inputs = []
        for f in FIELDS:
            column = np.array([r[f] for r in records])
            text = column.dtype.kind == "U"
            inp = grpcclient.InferInput(f, [3], "BYTES" if text else "FP64")
            inp.set_data_from_numpy(np.array([v.encode() for v in column], dtype=object)
                                    if text else column.astype(np.float64))
            inputs.append(inp)
        got = client.infer("fraud-mlp", inputs).as_numpy("probabilities")
        np.testing.assert_allclose(got, want, atol=1e-5)
        with pytest.raises(InferenceServerException, match="raw input for the fraud kit") as info:
            client.infer("fraud-mlp", inputs[:2])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_a_message_that_does_not_parse_is_invalid_argument(servers: tuple[str, str]) -> None:
    channel = grpc.insecure_channel(servers[1])
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    for payload in (b"\xff\xff\xff\xff garbage", b"\x0a\x03\xff\xfe\xfd"):
        with pytest.raises(grpc.RpcError) as info:
            call(payload, metadata=tuple(AUTH.items()))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    with pytest.raises(grpc.RpcError) as info:  # not served: Triton's shared-memory calls
        channel.unary_unary("/inference.GRPCInferenceService/SystemSharedMemoryStatus")(
            b"", metadata=tuple(AUTH.items()))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _fuzz_settings() -> Any:
    from hypothesis import HealthCheck, settings

    return settings(max_examples=120, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _fuzz_requests() -> Any:
    from hypothesis import strategies as st

    tensor = st.fixed_dictionaries({
        "name": st.sampled_from(["x", "ids", "q", "u", "text", "", "nope"]),
        "datatype": st.sampled_from(["FP32", "INT64", "INT8", "UINT8", "BYTES", "FP16",
                                     "BOOL", "UINT64", "bf16", ""]),
        "shape": st.lists(st.integers(-3, 6), max_size=4),
        "ints": st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), max_size=12),
        "floats": st.lists(st.floats(width=32, allow_nan=False), max_size=12),
        "raw": st.none() | st.binary(max_size=64)})
    return st.fixed_dictionaries({
        "model": st.sampled_from(["mixed", "strings", "nope", ""]),
        "version": st.sampled_from(["", "1", "2", "x"]),
        "tensors": st.lists(tensor, max_size=5),
        "outputs": st.lists(st.sampled_from(["y", "e", "qu", "echo", "zz"]), max_size=3),
        "timeout": st.none() | st.integers(-5, 10 ** 6) | st.text(max_size=3)})


def test_fuzzed_grpc_requests_never_fault(servers: tuple[str, str]) -> None:
    """Hypothesis-made ModelInferRequests (typed and raw contents, any datatype and shape):
    every answer is OK or a client-error status, never INTERNAL or UNKNOWN."""
    from hypothesis import given

    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(servers[1]))
    metadata = tuple(AUTH.items())

    @_fuzz_settings()
    @given(spec=_fuzz_requests())
    def fuzz(spec: dict[str, Any]) -> None:
        req = service_pb2.ModelInferRequest(model_name=spec["model"],
                                            model_version=spec["version"])
        raws = [t["raw"] for t in spec["tensors"]]
        use_raw = all(r is not None for r in raws) and raws
        for t in spec["tensors"]:
            tensor = req.inputs.add(name=t["name"], datatype=t["datatype"])
            tensor.shape.extend(t["shape"])
            if not use_raw:
                tensor.contents.int_contents.extend(t["ints"])
                tensor.contents.fp32_contents.extend(t["floats"])
        if use_raw:
            req.raw_input_contents.extend(raws)
        for name in spec["outputs"]:
            req.outputs.add(name=name)
        if isinstance(spec["timeout"], int):
            req.parameters["timeout"].int64_param = spec["timeout"]
        elif spec["timeout"] is not None:
            req.parameters["timeout"].string_param = spec["timeout"]
        try:
            stub.ModelInfer(req, metadata=metadata)
        except grpc.RpcError as exc:
            assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                exc.code(), exc.details(), req)

    fuzz()
    inputs, arrays = _inputs()
    _check(grpcclient.InferenceServerClient(servers[1]).infer("mixed", inputs, headers=AUTH),
           arrays)
