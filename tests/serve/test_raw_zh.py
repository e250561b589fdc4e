"""Chinese text served raw: the server tokenizes; real clients send UTF-8 sentences."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest_helpers import call, running
from tritonclient.utils import InferenceServerException

import rtinfer
from rtinfer.kits import Kit
from rtinfer.kits.intent_requests_zh import REQUESTS_ZH
from rtinfer.serve import create_app, load_repository

pytestmark = pytest.mark.slow

# The kit's 80 hand-written requests (two per intent, none from a template), in batches of 8.
SENTENCES = [text for _, text in REQUESTS_ZH]
INTENTS = [intent for intent, _ in REQUESTS_ZH]
BATCH = 8


@pytest.fixture(scope="module")
def served(intent_zh_kit: Kit, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, str, str]]:
    """(HTTP host:port, gRPC host:port, model name) of the kit's model deployed raw."""
    repo = tmp_path_factory.mktemp("zh") / "repo"
    name = intent_zh_kit.model_path.parent.name
    shutil.copytree(intent_zh_kit.model_path.parent, repo / name)
    (repo / name / "rtinfer.json").write_text(json.dumps(
        {"kit": "intent-zh", "kit_size": "small", "threads": 1, "max_batch_size": 8}))
    app = create_app(load_repository(repo), grpc_port=0)
    with running(app) as url:
        yield url, f"127.0.0.1:{app.state.grpc_port}", name


@pytest.fixture(scope="module")
def want(intent_zh_kit: Kit) -> np.ndarray:
    with rtinfer.load(intent_zh_kit.model_path, threads=1) as s:
        return np.concatenate([s.run(intent_zh_kit.preprocess([t]))["logits"]
                               for t in SENTENCES])


def _batches() -> list[list[str]]:
    return [SENTENCES[i:i + BATCH] for i in range(0, len(SENTENCES), BATCH)]


def test_tritonclient_http_and_grpc_send_chinese_bytes(served: tuple[str, str, str],
                                                       want: np.ndarray,
                                                       intent_zh_kit: Kit) -> None:
    url, grpc_url, name = served
    http, grpc = httpclient.InferenceServerClient(url), grpcclient.InferenceServerClient(grpc_url)
    got_http, got_grpc = [], []
    for batch in _batches():
        text = np.array([s.encode("utf-8") for s in batch], dtype=object)
        h = httpclient.InferInput("text", [len(batch)], "BYTES")
        h.set_data_from_numpy(text, binary_data=True)
        got_http.append(http.infer(name, [h]).as_numpy("logits"))
        g = grpcclient.InferInput("text", [len(batch)], "BYTES")
        g.set_data_from_numpy(text)
        got_grpc.append(grpc.infer(name, [g]).as_numpy("logits"))
    http_logits, grpc_logits = np.concatenate(got_http), np.concatenate(got_grpc)
    # The server tokenizes as the kit does: the same logits as one sentence at a time here.
    np.testing.assert_allclose(http_logits, want, atol=1e-4)
    np.testing.assert_allclose(grpc_logits, want, atol=1e-4)
    predicted = [intent_zh_kit.labels[i] for i in http_logits.argmax(1)]
    assert np.mean([p == i for p, i in zip(predicted, INTENTS, strict=True)]) >= 0.75


def test_tf_serving_rest_instances(served: tuple[str, str, str], want: np.ndarray) -> None:
    url, _, name = served
    logits = []
    for batch in _batches():
        status, body = call(url, f"/v1/models/{name}:predict", {"instances": batch})
        assert status == 200
        logits += [p["logits"] for p in body["predictions"]]
    np.testing.assert_allclose(np.array(logits), want, atol=1e-4)


def test_text_that_is_not_utf8_is_a_400_that_says_so(served: tuple[str, str, str]) -> None:
    url, grpc_url, name = served
    gbk = "打开客厅的灯".encode("gbk")
    h = httpclient.InferInput("text", [1], "BYTES")
    h.set_data_from_numpy(np.array([gbk], dtype=object), binary_data=True)
    with pytest.raises(InferenceServerException, match="UTF-8") as err:
        httpclient.InferenceServerClient(url).infer(name, [h])
    assert err.value.status() == "400"
    g = grpcclient.InferInput("text", [1], "BYTES")
    g.set_data_from_numpy(np.array([gbk], dtype=object))
    with pytest.raises(InferenceServerException, match="UTF-8") as gerr:
        grpcclient.InferenceServerClient(grpc_url).infer(name, [g])
    assert gerr.value.status() == "StatusCode.INVALID_ARGUMENT"
    # A JSON body in another encoding: refused as not UTF-8, not as "malformed".
    body = json.dumps({"instances": ["打开客厅的灯"]}, ensure_ascii=False).encode("gbk")
    status, answer = call(url, f"/v1/models/{name}:predict", body)
    assert status == 400 and "not UTF-8" in answer["error"]


def test_errors_quote_chinese_names_as_written(served: tuple[str, str, str]) -> None:
    url, _, name = served
    raw = json.dumps({"inputs": [{"name": "文本", "datatype": "BYTES", "shape": [1],
                                  "data": ["打开灯"]}]}, ensure_ascii=False).encode()
    status, _ = call(url, f"/v2/models/{name}/infer", raw)
    assert status == 400
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://{url}/v2/models/{name}/infer", data=raw,
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    text = err.value.read().decode("utf-8")
    assert "文本" in text and "\\u" not in text  # UTF-8 in the body, no escapes
