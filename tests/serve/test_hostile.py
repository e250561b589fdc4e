"""`rtinfer serve` against hostile and malformed requests: every client mistake is a 4xx that
names the field, nothing outside the repository is ever loaded, the key cannot be skipped,
BYTES round-trip exactly, and the server answers correctly afterwards."""

from __future__ import annotations

import http.client
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest_helpers import call, running
from hostile_models import build_repository, check_mixed_answer, mixed_request

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    build_repository(root / "repo")
    # A model outside the repository, which no request may ever get served.
    build_repository(root / "outside")
    return root / "repo"


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[str]:
    from rtinfer.serve import create_app, load_repository

    app = create_app(load_repository(repo), api_key=KEY, max_body_bytes=1 << 20)
    with running(app) as url:
        yield url


def raw_post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes, dict[str, str]]:
    """One POST; header values go out as UTF-8 bytes, as a hostile client may send them."""
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        sent = {k: v.encode() for k, v in {**AUTH, **(headers or {})}.items()}
        conn.request("POST", path, body=body, headers=sent)  # type: ignore[arg-type]
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def infer(url: str, body: Any, model: str = "mixed") -> tuple[int, Any]:
    return call(url, f"/v2/models/{model}/infer", body, headers=AUTH)


# -- the repository is the boundary --------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "%2E%2E", "..%2F..%2Foutside", ".hidden",
                                  "a\\b", "x" * 300, "%00"])
def test_load_refuses_names_that_leave_the_repository(server: str, name: str) -> None:
    status, body = call(server, f"/v2/repository/models/{name}/load", b"", headers=AUTH)
    assert status in (400, 404), (status, body)
    if status == 400:
        assert "name" in body["error"]
    index = call(server, "/v2/repository/index", b"", headers=AUTH)[1]
    assert sorted({e["name"] for e in index}) == ["mixed", "strings"]
    assert call(server, "/v2/health/ready")[0] == 200  # still ready: nothing half-loaded


def test_unload_refuses_names_too(server: str) -> None:
    for name in ("..", "x" * 300):
        status, body = call(server, f"/v2/repository/models/{name}/unload", b"", headers=AUTH)
        assert status == 400 and "name" in body["error"], (status, body)


def _link_out(repo: Path, what: str) -> None:
    outside = repo.parent / "outside"
    if what == "model-folder":
        (repo / "linked").symlink_to(outside / "mixed", target_is_directory=True)
    elif what == "version-folder":
        (repo / "linked").mkdir()
        (repo / "linked" / "1").symlink_to(outside / "mixed" / "1", target_is_directory=True)
    elif what == "model-file":
        (repo / "linked" / "1").mkdir(parents=True)
        (repo / "linked" / "1" / "model.onnx").symlink_to(outside / "mixed" / "1" / "model.onnx")
    elif what == "default-model-filename":
        (repo / "linked" / "1").mkdir(parents=True)
        (repo / "linked" / "config.pbtxt").write_text(
            'name: "linked"\ndefault_model_filename: "../../../outside/mixed/1/model.onnx"\n')


@pytest.mark.parametrize("what", ["model-folder", "version-folder", "model-file",
                                  "default-model-filename"])
def test_links_and_paths_out_of_the_repository_are_refused(
        tmp_path: Path, what: str) -> None:
    from rtinfer.serve import create_app, load_repository

    repo = build_repository(tmp_path / "repo")
    build_repository(tmp_path / "outside")
    _link_out(repo, what)
    app = create_app(load_repository(repo), api_key=KEY)
    with running(app, probe="/v2/health/live") as url:
        index = {e["name"]: e for e in call(url, "/v2/repository/index", b"", headers=AUTH)[1]}
        assert index["linked"]["state"] == "UNAVAILABLE"
        reason = index["linked"]["reason"]
        assert "outside" in reason or "default_model_filename" in reason, reason
        status, body = call(url, "/v2/repository/models/linked/load", b"", headers=AUTH)
        assert status == 400, (status, body)
        assert infer(url, mixed_request(), "linked")[0] == 404  # never served
        assert infer(url, mixed_request())[0] == 200             # the others still are


def test_links_inside_the_repository_are_followed(tmp_path: Path) -> None:
    from rtinfer.serve import create_app, load_repository

    repo = build_repository(tmp_path / "repo")
    (repo / "alias" / "1").mkdir(parents=True)
    (repo / "alias" / "1" / "model.onnx").symlink_to(repo / "mixed" / "1" / "model.onnx")
    with running(create_app(load_repository(repo))) as url:
        status, body = infer(url, mixed_request(), "alias")
        assert status == 200, body
        check_mixed_answer(body)


def test_a_manifest_cannot_name_files_outside_its_artifact(cnn: Any, tmp_path: Path) -> None:
    import rtinfer
    from rtinfer.errors import UnsafePathError

    artifact = rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    manifest_path = artifact.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key, value in (("model_file", "../../../elsewhere/model.onnx"),
                       ("model_file", "/etc/hostname")):
        manifest_path.write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(UnsafePathError, match="model_file"):
            rtinfer.load_artifact(artifact.path)
    files = {"../../../etc/hostname": {"sha256": "0" * 64}}
    manifest_path.write_text(json.dumps({**manifest, "files": files}))
    with pytest.raises(UnsafePathError, match="may not contain '..'"):
        rtinfer.load_artifact(artifact.path)


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from rtinfer.errors import ModelLoadError
    from rtinfer.models import import_model

    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    weight = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[4])
    weight.data_location = T.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = h.make_graph([h.make_node("Mul", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, [4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [4])], [weight])
    (tmp_path / "model").mkdir()
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]),
              str(tmp_path / "model" / "model.onnx"))
    with pytest.raises(ModelLoadError, match="external data outside its folder"):
        import_model(tmp_path / "model" / "model.onnx")


# -- the API key ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "   ", "\n"])
def test_an_empty_key_is_an_error_not_an_open_server(repo: Path, key: str) -> None:
    from rtinfer.serve import create_app

    with pytest.raises(ValueError, match="API key is empty"):
        create_app(repo, api_key=key)


def test_an_empty_key_file_stops_the_cli(tmp_path: Path, repo: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "key").write_text("  \n")
    done = subprocess.run([sys.executable, "-m", "rtinfer.cli", "serve", str(repo),
                           "--api-key-file", str(tmp_path / "key"), "--port", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "API key is empty" in done.stderr


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"},
    {"Authorization": "Bearer "}, {"X-API-Key": ""}, {"X-API-Key": KEY + "x"},
    {"Authorization": f"Bearer {KEY[:-1]}"}])
def test_requests_without_the_key_in_a_known_form_are_refused(
        server: str, headers: dict[str, str]) -> None:
    for path, body in (("/v2/models/mixed/infer", mixed_request()), ("/metrics", None),
                       ("/openapi.json", None), ("/v2/repository/index", b""),
                       ("/v2/repository/models/mixed/unload", b""), ("/v2", None),
                       ("/v1/models/mixed", None)):
        status, answer = call(server, path, body, headers=headers)
        assert status == 401, (path, headers, status, answer)
    assert call(server, "/v2/health/ready", headers=headers)[0] == 200  # probes need no key


def test_the_bearer_scheme_is_case_insensitive(server: str) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        status, _ = call(server, "/v2/models/mixed/infer", mixed_request(),
                         headers={"Authorization": f"{scheme} {KEY}"})
        assert status == 200
    assert call(server, "/v2", headers={"X-API-Key": KEY})[0] == 200


# -- BYTES ---------------------------------------------------------------------------------

TEXTS = ["hello", "héllo wörld", "", "打开客厅的灯", "emoji \U0001f600", "a\u0000b"]


def test_bytes_round_trip_in_json(server: str) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)],
                        "data": TEXTS}]}
    status, answer = infer(server, body, "strings")
    assert status == 200, answer
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["echo"]["datatype"] == "BYTES"
    assert outputs["echo"]["data"] == TEXTS
    assert outputs["n"]["data"] == [len(TEXTS)]


def _length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def test_bytes_round_trip_in_binary(server: str) -> None:
    blob = _length_prefixed([t.encode() for t in TEXTS])
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES",
                                     "shape": [len(TEXTS)],
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "echo", "parameters": {"binary_data": True}}]
                         }).encode()
    status, raw, headers = raw_post(server, "/v2/models/strings/infer", header + blob,
                                    {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, raw
    json_len = int(headers["inference-header-content-length"])
    meta = json.loads(raw[:json_len])
    (out,) = meta["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [len(TEXTS)]
    assert raw[json_len:] == blob  # exactly the 4-byte-length-prefixed strings sent


def test_bytes_round_trip_through_tritonclient(server: str) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server)
    texts = np.array([t.encode() for t in TEXTS], dtype=object)
    for binary in (True, False):
        inp = httpclient.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(texts, binary_data=binary)
        out = httpclient.InferRequestedOutput("echo", binary_data=binary)
        # tritonclient adds its own headers to the dict it is given: hand it a copy.
        result = client.infer("strings", [inp], outputs=[out], headers=dict(AUTH))
        got = [v if isinstance(v, bytes) else str(v).encode() for v in result.as_numpy("echo")]
        assert got == list(texts), binary


def test_bytes_that_are_not_utf8_are_a_400_for_a_text_input(server: str) -> None:
    blob = _length_prefixed([b"\xff\xfe"])
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    status, raw, _ = raw_post(server, "/v2/models/strings/infer", header + blob,
                              {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and b"UTF-8" in raw, raw


def test_tf_serving_strings(server: str) -> None:
    status, answer = call(server, "/v1/models/strings:predict", {"inputs": TEXTS}, headers=AUTH)
    assert status == 200, answer
    assert answer["outputs"]["echo"] == TEXTS
    status, answer = call(server, "/v1/models/strings:predict",
                          {"instances": [{"b64": "aMOp"}]}, headers=AUTH)  # "hé"
    assert status == 200 and answer["predictions"][0]["echo"] == "hé", answer


# -- client mistakes are 4xx, naming the field ---------------------------------------------


def _with_input(which: str, **changes: Any) -> dict[str, Any]:
    body = mixed_request()
    for item in body["inputs"]:  # type: ignore[attr-defined]
        if item["name"] == which:
            item.update(changes)
    return body


V2_MISTAKES = [
    (_with_input("q", data=[300, 1]), "q", "range of INT8"),
    (_with_input("q", data=[-129, 1]), "q", "range of INT8"),
    (_with_input("u", data=[-1, 1]), "u", "range of UINT8"),
    (_with_input("ids", data=[2 ** 63, 0, 0]), "ids", "range of INT64"),
    (_with_input("ids", data=[2 ** 70, 0, 0]), "ids", "range of INT64"),
    (_with_input("ids", data=[1.5, 0, 0]), "ids", "fractional"),
    (_with_input("x", data=[1e39, 0, 0, 0]), "x", "too large for FP32"),
    (_with_input("x", data=["a", "b", "c", "d"]), "x", "strings"),
    (_with_input("x", data=[[1, 2], [3]]), "x", "x"),
    (_with_input("x", data=[None, 1, 2, 3]), "x", "FP32 numbers"),
    (_with_input("x", data={"a": 1}), "x", "FP32 numbers"),
    (_with_input("x", datatype=["FP32"]), "x", "datatype"),
    (_with_input("x", datatype={"t": "FP32"}), "x", "datatype"),
    (_with_input("x", datatype="FP64"), "x", "is FP32 for this model"),
    (_with_input("x", shape=[1, True, 4]), "x", "shape"),
    (_with_input("x", shape=[0, 4], data=[]), "x", "no elements"),
    (_with_input("x", shape="1,4"), "x", "shape"),
    (_with_input("x", shape=[1] * 70 + [4]), "x", "dimensions"),
    (_with_input("x", parameters=[1]), "x", "parameters"),
    (_with_input("x", parameters={"binary_data_size": True}), "x", "binary_data_size"),
    (_with_input("x", name=7), "", '"name"'),
    ({**mixed_request(), "parameters": [1]}, "", "parameters"),
    ({**mixed_request(), "parameters": {"binary_data_output": "yes"}}, "", "binary_data_output"),
    ({**mixed_request(), "outputs": {"name": "y"}}, "", "outputs"),
    ({**mixed_request(), "outputs": [{"parameters": {}}]}, "", "outputs"),
    ({**mixed_request(), "outputs": [{"name": "nope"}]}, "", "nope"),
    ({**mixed_request(), "outputs": [{"name": "y", "parameters": "x"}]}, "", "parameters"),
    ({**mixed_request(), "id": {"a": 1}}, "", '"id"'),
    ({**mixed_request(), "inputs": {}}, "", "inputs"),
    ({"inputs": mixed_request()["inputs"][:1]}, "", "missing"),  # type: ignore[index]
    (_with_input("ids", data=[0, 1, 10]), "", "rejected the input values"),
    ([1, 2], "", "JSON object"),
]


@pytest.mark.parametrize(("body", "field", "words"), V2_MISTAKES)
def test_v2_client_mistakes_are_400s_naming_the_field(server: str, body: Any, field: str,
                                                      words: str) -> None:
    status, answer = infer(server, body)
    assert status == 400, (status, answer)
    assert words in answer["error"], answer
    if field:
        assert f"'{field}'" in answer["error"], answer


@pytest.mark.parametrize("header", ["²", "١٢", "-1", "12a", "99999999999999999999999", " "])
def test_a_bad_header_length_is_a_400(server: str, header: str) -> None:
    body = json.dumps(mixed_request()).encode()
    status, raw, _ = raw_post(server, "/v2/models/mixed/infer", body,
                              {"Inference-Header-Content-Length": header})
    assert status == 400, (status, raw)
    assert b"Inference-Header-Content-Length" in raw


@pytest.mark.parametrize("path", ["/v2/models/mixed/versions/%C2%B2", "/v2/models/mixed/versions/"
                                  + "9" * 5000, "/v1/models/mixed/versions/%C2%B2",
                                  "/v2/models/" + "m" * 300, "/v1/models/" + "m" * 300])
def test_odd_names_and_versions_are_404s(server: str, path: str) -> None:
    status, answer = call(server, path, headers=AUTH)
    assert status == 404, (status, answer)


def _nested(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


TFS_MISTAKES = [
    ({"instances": [{"x": [1, 2, 3, 4], "ids": [0, 1, 2], "q": [300, 0], "u": [0, 0]}]},
     "range of int8"),
    ({"instances": [{"x": [1, 2, 3, 4], "ids": [0, 1, 2], "q": [0, 0], "u": [0, 0],
                     "extra": 1}]}, "unknown ['extra']"),
    ({"inputs": {"x": [[1, 2, 3, 4]], "ids": [[0, 1, 2]], "q": [[0, 0]], "u": [[-5, 0]]}},
     "range of uint8"),
    ({"inputs": {"x": [["a", 2, 3, 4]], "ids": [[0, 1, 2]], "q": [[0, 0]], "u": [[0, 0]]}},
     "'x'"),
    ({"instances": [], "inputs": {}}, "not both"),
    ({"instances": "x"}, "non-empty list"),
    ({"inputs": {"x": _nested(70), "ids": [[0, 1, 2]], "q": [[0, 0]], "u": [[0, 0]]}},
     "'x'"),
]


@pytest.mark.parametrize(("body", "words"), TFS_MISTAKES)
def test_tf_serving_client_mistakes_are_400s(server: str, body: Any, words: str) -> None:
    status, answer = call(server, "/v1/models/mixed:predict", body, headers=AUTH)
    assert status == 400, (status, answer)
    assert words in answer["error"], answer


def test_unknown_routes_and_methods_are_json_4xx(server: str) -> None:
    status, answer = call(server, "/nope", headers=AUTH)
    assert status == 404 and "error" in answer
    status, answer = call(server, "/v2/models/mixed/infer", method="GET", headers=AUTH)
    assert status == 405 and "error" in answer


def test_one_bad_request_in_a_batch_fails_alone(server: str) -> None:
    """A token id past the table passes every check but the graph's; batched with good
    requests (20 ms queue delay), only it fails."""
    results: dict[int, tuple[int, Any]] = {}

    def send(i: int) -> None:
        ids = [0, 1, 99] if i == 3 else [0, 1, 9]
        results[i] = infer(server, mixed_request(ids=ids))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[3][0] == 400 and "rejected the input values" in results[3][1]["error"]
    for i in (0, 1, 2, 4, 5):
        assert results[i][0] == 200, results[i]
        check_mixed_answer(results[i][1])


def test_a_server_fault_is_a_logged_500_without_the_payload(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A model whose graph fails on every input (a Reshape to the wrong size)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    from rtinfer.serve import create_app

    graph = h.make_graph([h.make_node("Reshape", ["x", "shape"], ["y"])], "broken",
                         [h.make_tensor_value_info("x", T.FLOAT, ["b", 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["p", "q"])],
                         [numpy_helper.from_array(np.array([3, 5], np.int64), "shape")])
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]),
              str(tmp_path / "repo" / "broken" / "1" / "model.onnx"))
    # Its warm-up would fail too, so the version is put together here, unwarmed.
    from rtinfer.deploy.settings import BatchingConfig, ModelConfig
    from rtinfer.engines import load
    from rtinfer.models import import_model
    from rtinfer.serve.batcher import Batcher
    from rtinfer.serve.model import ServedModel
    from rtinfer.serve.repository import ModelRepository

    session = load(import_model(tmp_path / "repo" / "broken" / "1" / "model.onnx"),
                   "onnxruntime", 1, warmup=False)
    repo = ModelRepository(None)
    repo.served["broken"] = {1: ServedModel("broken", "1", [session], ModelConfig("broken"),
                                            Batcher([session], BatchingConfig()))}
    repo.states["broken"] = {}
    secret = 1234.5678
    with caplog.at_level(logging.INFO, logger="rtinfer"), running(create_app(repo)) as url:
        status, answer = call(url, "/v2/models/broken/infer", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [secret] * 4}]})
    assert status == 500, answer
    faults = [r for r in caplog.records if "server fault" in r.getMessage()]
    assert faults, [r.getMessage() for r in caplog.records]
    assert all(str(secret) not in r.getMessage() for r in caplog.records)


# -- the OpenAPI document ------------------------------------------------------------------


def test_openapi_document_describes_every_route(server: str, repo: Path) -> None:
    from starlette.routing import Route

    from rtinfer.serve import create_app

    status, document = call(server, "/openapi.json", headers=AUTH)
    assert status == 200 and document["openapi"].startswith("3.")
    app = create_app(repo)
    routes = {r.path for r in app.routes if isinstance(r, Route)}
    assert routes == set(document["paths"]), routes ^ set(document["paths"])
    request = document["components"]["schemas"]["InferRequest"]
    assert request["required"] == ["inputs"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            assert "200" in op["responses"], (path, method)
            for ref in _refs(op):
                assert ref.split("/")[-1] in document["components"]["schemas"], ref


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_answers_are_still_right_after_everything(server: str) -> None:
    status, answer = infer(server, mixed_request(rows=2))
    assert status == 200, answer
    check_mixed_answer(answer, rows=2)
    assert os.environ.get("RTINFER_API_KEY") is None  # no test leaked a key into the env


def test_a_png_that_declares_gigapixels_is_refused_before_inflating() -> None:
    import zlib

    from rtinfer.errors import InvalidInputError
    from rtinfer.serve.raw import decode_png

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MB of zeros in ~64 KB
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bomb)
           + chunk(b"IEND", b""))
    with pytest.raises(InvalidInputError, match="pixels are accepted"):
        decode_png(png)
    small = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)  # declares 4 KB, holds 64 MB
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", small) + chunk(b"IDAT", bomb)
           + chunk(b"IEND", b""))
    with pytest.raises(InvalidInputError, match="does not match its declared size"):
        decode_png(png)


def test_path_checks(tmp_path: Path) -> None:
    from rtinfer._paths import check_name, contained, files_inside, relative_inside
    from rtinfer.errors import InvalidInputError, UnsafePathError

    assert check_name("cnn-v2_int8.onnx") == "cnn-v2_int8.onnx"
    assert check_name("打开") == "打开"
    for bad in ("", ".", "..", ".git", "a/b", "a\\b", "a\nb", "é" * 200, None, 3):
        with pytest.raises(InvalidInputError):
            check_name(bad)
    (tmp_path / "root" / "m").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f").write_text("x")
    (tmp_path / "root" / "m" / "out").symlink_to(tmp_path / "other" / "f")
    (tmp_path / "root" / "m" / "in").symlink_to(tmp_path / "root" / "m")
    with pytest.raises(UnsafePathError, match="outside"):
        files_inside(tmp_path / "root", tmp_path / "root" / "m")
    with pytest.raises(UnsafePathError):
        contained(tmp_path / "root", tmp_path / "root" / ".." / "other")
    for bad in ("/etc/passwd", "../f", "a/../../f", ""):
        with pytest.raises(UnsafePathError):
            relative_inside(tmp_path / "root", bad)
    (tmp_path / "root" / "m" / "out").unlink()
    # A link back into the folder is a loop, not an escape: listed once, never followed twice.
    (tmp_path / "root" / "m" / "w").write_text("x")
    assert files_inside(tmp_path / "root", tmp_path / "root" / "m") == [
        tmp_path / "root" / "m" / "w"]


def test_only_loopback_addresses_count_as_private() -> None:
    from rtinfer.cli.serve import _loopback

    assert all(_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))
