"""``rtinfer serve`` on TensorFlow's forms: a .tflite artifact on LiteRT, and a TF Serving
model base path (numbered SavedModels) served as it is, with its version policy and hot
reload, to tritonclient (HTTP and gRPC) and TF Serving REST clients."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import rtinfer

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from conftest_helpers import call, running


def test_tflite_artifact_and_tf_serving_folder(digits_keras: Path, digits: dict[str, Any],
                                               tmp_path: Path) -> None:
    import keras
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from rtinfer.optimize import Quantize
    from rtinfer.optimize.passes.quantize import quantize
    from rtinfer.serve import create_app, load_repository

    repo = tmp_path / "repo"
    model = rtinfer.import_model(digits_keras)
    int8 = quantize(model, Quantize(method="dynamic", engine="litert"))
    rtinfer.save_artifact(model, repo, "digits")  # version 1: the ONNX original, on ORT
    rtinfer.save_artifact(int8, repo, "digits")   # version 2: the .tflite, on LiteRT
    assert 'backend: "litert"' in (repo / "digits" / "config.pbtxt").read_text()
    (repo / "digits" / "rtinfer.json").write_text('{"version_policy": "all"}')
    keras_model = keras.saving.load_model(digits_keras)
    for version in (1, 2):  # TF Serving's layout: <base>/<version>/saved_model.pb, no config
        keras_model.export(str(repo / "tfs" / str(version)), verbose=False)
    x = digits["x"][1200:1204]
    want = keras_model(x, training=False).numpy()

    app = create_app(load_repository(repo, threads=1), poll_interval_s=0.2, grpc_port=0)
    with running(app) as url:
        status, meta = call(url, "/v2/models/digits")
        assert status == 200 and meta["platform"] == "litert"
        # One folder, two formats: each version runs on its own engine.
        status, meta = call(url, "/v2/models/digits/versions/1")
        assert status == 200 and meta["platform"] == "onnxruntime_onnx", meta
        http = httpclient.InferenceServerClient(url)
        inp = httpclient.InferInput("pixels", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = http.infer("digits", [inp]).as_numpy("logits")
        assert (got.argmax(1) == want.argmax(1)).all()

        # The TF Serving folder: latest version only (TF Serving's default policy), on ONNX.
        status, got = call(url, "/v1/models/tfs")
        assert status == 200
        assert [v["version"] for v in got["model_version_status"]] == ["2"]
        status, got = call(url, "/v1/models/tfs:predict", {"instances": x.tolist()})
        assert status == 200, got
        np.testing.assert_allclose(np.array(got["predictions"]), want, atol=1e-4)
        status, got = call(url, "/v1/models/tfs:predict", {"instances": [[1.0, 2.0]]})
        assert status == 400 and "pixels" in got["error"]
        status, got = call(url, "/v1/models/tfs:predict", {  # as TF Serving clients send it
            "signature_name": "serving_default", "instances": x[:1].tolist()})
        assert status == 200, got
        status, got = call(url, "/v1/models/tfs:predict", {"signature_name": "classify",
                                                           "instances": x[:1].tolist()})
        assert status == 400 and "'classify' not found" in got["error"]

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        ginp = grpcclient.InferInput("pixels", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        np.testing.assert_allclose(grpc.infer("tfs", [ginp]).as_numpy("output_0"), want,
                                   atol=1e-4)

        # A new version appears: converted once, then served instead of version 2.
        shutil.copytree(repo / "tfs" / "2", repo / "tfs" / "3")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, got = call(url, "/v1/models/tfs")
            if [v["version"] for v in got["model_version_status"]] == ["3"]:
                break
            time.sleep(0.2)
        assert [v["version"] for v in got["model_version_status"]] == ["3"]


def test_a_tf_serving_base_path_is_served_as_it_is(keras_mlp: Any, tmp_path: Path) -> None:
    """``rtinfer serve /models/fraud``, as ``tensorflow_model_server --model_base_path``: one
    model named after the folder, its newest version, the base path the boundary."""
    from rtinfer.serve import create_app, load_repository

    base = tmp_path / "models" / "fraud"
    keras_mlp.export(str(base / "1"), verbose=False)
    (tmp_path / "models" / "other").mkdir()  # a sibling folder is not part of it
    feeds = {"amount": np.ones((1, 4), np.float32), "merchant": np.ones((1, 3), np.float32)}
    want = keras_mlp(feeds)["score"].numpy()
    app = create_app(load_repository(base, threads=1), poll_interval_s=0.2)
    with running(app) as url:
        status, got = call(url, "/v1/models/fraud:predict", {
            "instances": [{"amount": feeds["amount"][0].tolist(),
                           "merchant": feeds["merchant"][0].tolist()}]})
        assert status == 200, got
        np.testing.assert_allclose(np.array(got["predictions"][0]["score"]), want[0],
                                   atol=1e-4)
        assert call(url, "/v2/repository/index", b"")[1] == [
            {"name": "fraud", "state": "READY", "reason": "", "version": "1"}]
        assert call(url, "/v2/repository/models/other/load", b"")[0] == 404
        assert call(url, "/v2/repository/models/..%2Fother/load", b"")[0] in (400, 404)
