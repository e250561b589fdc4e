"""TF Serving's REST API, spoken in plain HTTP as TF Serving's users do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest_helpers import KEY, call

import rtinfer
from rtinfer.models import ImportedModel

AUTH = {"X-API-Key": KEY, "Content-Type": "application/json"}
X = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)


def _expected(cnn: ImportedModel) -> np.ndarray:
    with rtinfer.load(cnn, threads=1) as s:
        return s.run({"image": X})["logits"]


@pytest.mark.parametrize(("body", "key"), [
    ({"instances": X.tolist()}, "predictions"),
    ({"instances": [{"image": row} for row in X.tolist()]}, "predictions"),
    ({"inputs": X.tolist()}, "outputs"),
    ({"inputs": {"image": X.tolist()}}, "outputs"),
], ids=["row", "row-named", "columnar", "columnar-named"])
def test_predict_row_and_columnar(server: str, cnn: ImportedModel, body: dict[str, Any],
                                  key: str) -> None:
    status, got = call(server, "/v1/models/cnn:predict", body, headers=AUTH)
    assert status == 200, got
    np.testing.assert_allclose(np.array(got[key]), _expected(cnn), atol=1e-4)
    status, got = call(server, "/v1/models/cnn/versions/1:predict", body, headers=AUTH)
    assert status == 200 and key in got


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v1/models/cnn:predict", {"instances": [[1.0]]}, 400, "input 'image' has"),
    ("/v1/models/cnn:predict", {"instances": [], "inputs": []}, 400, "not both"),
    ("/v1/models/cnn:predict", {"instances": []}, 400, "non-empty list"),
    ("/v1/models/cnn:predict", {"instances": [[[1.0]], [1.0]]}, 400, "ragged"),
    ("/v1/models/cnn:predict", {"inputs": {"img": [1.0]}}, 400, "unknown input 'img'"),
    ("/v1/models/cnn:predict", b"{oops", 400, "not valid JSON"),
    ("/v1/models/nope:predict", {"instances": [1]}, 404, "unknown model 'nope'"),
    ("/v1/models/cnn/versions/7:predict", {"instances": [1]}, 404, "no ready version 7"),
])
def test_bad_predict_requests_name_the_problem(server: str, path: str, body: Any,
                                               status: int, message: str) -> None:
    got_status, got = call(server, path, body, headers=AUTH)
    assert got_status == status and message in got["error"]


def test_status_and_metadata(server: str) -> None:
    status, got = call(server, "/v1/models/cnn", headers=AUTH)
    assert status == 200
    assert got["model_version_status"] == [{"version": "1", "state": "AVAILABLE",
                                            "status": {"error_code": "OK", "error_message": ""}}]
    assert call(server, "/v1/models/cnn/versions/2", headers=AUTH)[0] == 404
    status, got = call(server, "/v1/models/cnn/metadata", headers=AUTH)
    signature = got["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["image"]["tensor_shape"]["dim"]] == [
        "-1", "3", "32", "32"]
    assert call(server, "/v1/models/cnn")[0] == 401  # the key guards these routes too
