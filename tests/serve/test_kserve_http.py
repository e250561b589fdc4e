"""A real server on a free loopback port, spoken to by Triton's own HTTP client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest_helpers import KEY, call
from tritonclient.utils import InferenceServerException

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve import load_repository


def _client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url)


AUTH = {"X-API-Key": KEY}


def _infer(url: str, x: np.ndarray, binary: bool, key: str | None = KEY):  # type: ignore[no-untyped-def]
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return _client(url).infer("cnn", [inp], outputs=[out], headers=headers)


def test_health_and_metadata(server: str) -> None:
    client = _client(server)
    assert client.is_server_live() and client.is_server_ready()  # health needs no key
    assert client.is_model_ready("cnn", headers=AUTH)
    assert "binary_tensor_data" in client.get_server_metadata(headers=AUTH)["extensions"]
    meta = client.get_model_metadata("cnn", headers=AUTH)
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["versions"] == ["1"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infer_matches_the_engine(server: str, cnn: ImportedModel,
                                               binary: bool) -> None:
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = _infer(server, x, binary).as_numpy("logits")
    with rtinfer.load(cnn, threads=1) as s:
        want = s.run({"image": x})["logits"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_wrong_dtype_is_a_400_naming_the_input(server: str) -> None:
    x = np.zeros((1, 3, 32, 32), np.float64)
    inp = httpclient.InferInput("image", list(x.shape), "FP64")
    inp.set_data_from_numpy(x, binary_data=False)
    with pytest.raises(InferenceServerException, match="input 'image' is FP32 for this "
                       "model; the request sends FP64") as info:
        _client(server).infer("cnn", [inp], headers={"X-API-Key": KEY})
    assert info.value.status() == "400"


def test_unknown_model_is_404_and_missing_key_is_401(server: str) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as info:
        _client(server).get_model_metadata("nope", headers=AUTH)
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException, match="missing or wrong API key") as info:
        _infer(server, np.zeros((1, 3, 32, 32), np.float32), binary=True, key=None)
    assert info.value.status() == "401"


def test_oversized_body_is_413_and_the_server_keeps_serving(server: str) -> None:
    big = np.zeros((100, 3, 32, 32), np.float32)  # 1.2 MB > the 1 MiB limit
    with pytest.raises(InferenceServerException, match="over this server's limit") as info:
        _infer(server, big, binary=True)
    assert info.value.status() == "413"
    assert _infer(server, big[:2], binary=True).as_numpy("logits").shape == (2, 10)


def test_malformed_json_is_400(server: str) -> None:
    req = urllib.request.Request(f"http://{server}/v2/models/cnn/infer", data=b"{not json",
                                 headers={"X-API-Key": KEY}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    assert "not valid JSON" in json.loads(info.value.read())["error"]


def test_empty_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(rtinfer.RtinferError, match="holds no models"):
        load_repository(tmp_path)


def _tensor(**kw: object) -> dict[str, object]:
    return {"name": "image", "datatype": "FP32", "shape": [1, 3, 32, 32],
            "data": [0.0] * 3072, **kw}


@pytest.mark.parametrize(("body", "header", "message"), [
    ({"inputs": "image"}, None, 'with an "inputs" list'),
    ({"inputs": [{"datatype": "FP32"}]}, None, 'must be an object with a "name"'),
    ({"inputs": [_tensor(datatype="FLOAT")]}, None, "datatype 'FLOAT'; expected one of"),
    ({"inputs": [_tensor(shape=[1, 3, -32, 32])]}, None, "list of non-negative integers"),
    ({"inputs": [_tensor(data=[0.0] * 5)]}, None, "has 5 elements but shape"),
    ({"inputs": [_tensor(data=["a"] * 3072)]}, None, "must hold FP32 numbers; it holds strings"),
    ({"inputs": [_tensor(data=None)]}, None, "neither data nor binary_data_size"),
    ({"inputs": [_tensor(), _tensor()]}, None, "input 'image' is given twice"),
    ({"inputs": [_tensor(name="img")]}, None, "unknown input name(s) ['img']"),
    ({"inputs": [_tensor(shape=[1, 3, 16, 16], data=[0.0] * 768)]}, None, "input 'image'"),
    ({"inputs": [_tensor(data=None, parameters={"binary_data_size": 12288})]}, None,
     "claims binary_data_size 12288 but only 0 bytes remain"),
    ({"inputs": [_tensor()], "parameters": {"timeout": "soon"}}, None,
     "parameters.timeout must be microseconds"),
    ({"inputs": [_tensor()]}, "99999", "Inference-Header-Content-Length 99999 is outside"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_requests_are_400_naming_the_problem(
        server: str, body: dict[str, object], header: str | None, message: str) -> None:
    headers = {"X-API-Key": KEY, **({"Inference-Header-Content-Length": header}
                                    if header else {})}
    status, got = call(server, "/v2/models/cnn/infer", body, headers=headers)
    assert status == 400 and message in got["error"]
    assert _infer(server, np.zeros((1, 3, 32, 32), np.float32), binary=True)  # still serving
