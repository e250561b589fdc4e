"""Property-based fuzzing of `rtinfer serve` over both protocols, the repository routes and a
kit's raw inputs: a fixed seed (hypothesis derandomized), a bounded count, a real server on
loopback. Every answer is a status below 500, and afterwards correct requests are still
answered correctly."""

from __future__ import annotations

import http.client
import json
import shutil
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_helpers import call, running
from hostile_models import build_repository, check_mixed_answer, mixed_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEY = "fuzz-key"
AUTH = {"X-API-Key": KEY}
EXAMPLES = 150  # per test: a few seconds each on two cores
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fraud_kit: Any) -> Iterator[str]:
    from rtinfer.serve import create_app, load_repository

    repo = build_repository(tmp_path_factory.mktemp("fuzz") / "repo")
    shutil.copytree(fraud_kit.models["fraud-mlp"].parent, repo / "fraud-mlp")
    (repo / "fraud-mlp" / "rtinfer.json").write_text(json.dumps(
        {"kit": "fraud", "kit_size": "small", "threads": 1, "max_batch_size": 8}))
    app = create_app(load_repository(repo), api_key=KEY, max_body_bytes=256 << 10)
    with running(app) as url:
        yield url


def send(url: str, method: str, path: str, body: bytes = b"",
         headers: dict[str, bytes] | None = None) -> int:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body or None,
                     headers={"X-API-Key": KEY.encode(), **(headers or {})})  # type: ignore[dict-item]
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    assert response.status < 500, (method, path, body[:300], response.status, answer[:300])
    return response.status


# JSON values of every type, nested a little: what a confused or hostile client sends.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12)
datatypes = st.sampled_from(["FP32", "INT64", "INT8", "UINT8", "BYTES", "BOOL", "FP16", "FP64",
                             "UINT64", "fp32", ""]) | json_values
shapes = st.lists(st.integers(-2, 5), max_size=4) | json_values
numbers = st.lists(st.integers(-300, 300) | st.floats(-1e40, 1e40, allow_nan=False),
                   max_size=16)
input_names = st.sampled_from(["x", "ids", "q", "u", "text", "nope"]) | json_values


@st.composite
def v2_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with some of its fields replaced by other (often wrong) values."""
    body: dict[str, Any] = mixed_request(rows=draw(st.integers(1, 3)))
    for item in body["inputs"]:
        for key, values in (("name", input_names), ("datatype", datatypes),
                            ("shape", shapes), ("data", numbers | json_values),
                            ("parameters", json_values | st.fixed_dictionaries(
                                {"binary_data_size": st.integers(-1, 64) | json_values}))):
            if draw(st.integers(0, 9)) == 0:
                item[key] = draw(values)
        if draw(st.integers(0, 19)) == 0:
            item.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
    if draw(st.booleans()):
        body["inputs"] = draw(st.permutations(body["inputs"]))[:draw(st.integers(0, 4))]
    for key, values in (("id", json_values), ("parameters", json_values | st.fixed_dictionaries(
            {"binary_data_output": json_values, "timeout": json_values})),
                        ("outputs", json_values | st.lists(st.fixed_dictionaries(
                            {"name": st.sampled_from(["y", "e", "qu", "zz"]) | json_values,
                             "parameters": st.fixed_dictionaries(
                                 {"binary_data": json_values})}), max_size=3))):
        if draw(st.integers(0, 4)) == 0:
            body[key] = draw(values)
    return body


@FUZZ
@given(body=v2_bodies(), version=st.sampled_from(["", "/versions/1", "/versions/2"]),
       model=st.sampled_from(["mixed", "strings", "fraud-mlp"]))
def test_v2_json_requests(server: str, body: dict[str, Any], version: str, model: str) -> None:
    send(server, "POST", f"/v2/models/{model}{version}/infer", json.dumps(body).encode())


@FUZZ
@given(header=st.text(max_size=40) | st.builds(str, st.integers(-5, 5000)),
       blob=st.binary(max_size=200), body=v2_bodies())
def test_v2_binary_requests(server: str, header: str, blob: bytes,
                            body: dict[str, Any]) -> None:
    text = json.dumps(body).encode()
    headers = {"Inference-Header-Content-Length": header.encode("utf-8", "replace")
               .replace(b"\r", b"").replace(b"\n", b"")}
    send(server, "POST", "/v2/models/mixed/infer", text + blob, headers)


@FUZZ
@given(form=st.sampled_from(["instances", "inputs", "both", "neither"]),
       value=json_values | st.lists(st.fixed_dictionaries(
           {"x": numbers, "ids": numbers, "q": numbers, "u": numbers}), max_size=3)
       | st.fixed_dictionaries({"x": numbers, "ids": numbers, "q": numbers, "u": numbers}),
       model=st.sampled_from(["mixed", "strings", "fraud-mlp", "nope"]))
def test_tf_serving_requests(server: str, form: str, value: Any, model: str) -> None:
    body = {"instances": value, "inputs": value} if form == "both" else (
        {} if form == "neither" else {form: value})
    send(server, "POST", f"/v1/models/{model}:predict", json.dumps(body).encode())


fraud_fields = st.fixed_dictionaries({
    "amount": st.floats(-1e300, 1e300) | json_values,
    "hour": st.integers(-100, 100) | json_values,
    "seconds_since_last": st.floats(0, 1e12) | json_values,
    "tx_last_1h": st.integers(-5, 10 ** 20), "tx_last_24h": st.integers(0, 50),
    "merchant_category": st.sampled_from(["grocery", "crypto", "", "unknown"]) | json_values,
    "country": st.text(max_size=4) | json_values, "home_country": st.text(max_size=4),
    "card_present": st.booleans() | json_values, "distance_km": st.floats(-1, 1e6),
    "account_age_days": st.integers(-10, 10 ** 6)})


@FUZZ
@given(instances=st.lists(fraud_fields, min_size=1, max_size=3), drop=st.integers(0, 12))
def test_raw_kit_inputs(server: str, instances: list[dict[str, Any]], drop: int) -> None:
    if drop < len(instances[0]):
        instances[0].pop(sorted(instances[0])[drop])
    send(server, "POST", "/v1/models/fraud-mlp:predict", json.dumps({"instances": instances},
                                                                allow_nan=False).encode())


@FUZZ
@given(name=st.text(min_size=1, max_size=300), action=st.sampled_from(["load", "unload"]),
       method=st.sampled_from(["POST", "GET", "PUT"]))
def test_repository_routes(server: str, name: str, action: str, method: str) -> None:
    if name in ("mixed", "strings", "fraud-mlp"):
        return  # reloading the real models is the repository tests' business
    quoted = urllib.parse.quote(name, safe="")
    for path in (f"/v2/repository/models/{quoted}/{action}", f"/v2/models/{quoted}",
                 f"/v2/models/{quoted}/ready", f"/v1/models/{quoted}",
                 f"/v2/models/mixed/versions/{quoted}"):
        send(server, method if "repository" in path else "GET", path)


def test_still_correct_after_the_fuzzing(server: str) -> None:
    """Runs after the fuzz tests of this module (pytest keeps file order)."""
    status, answer = call(server, "/v2/models/mixed/infer", mixed_request(rows=3),
                          headers=AUTH)
    assert status == 200, answer
    check_mixed_answer(answer, rows=3)
    status, answer = call(server, "/v2/models/strings/infer", {"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "bé"]}]},
        headers=AUTH)
    assert status == 200 and answer["outputs"][0]["data"] == ["a", "bé"], answer
    index = call(server, "/v2/repository/index", b"", headers=AUTH)[1]
    assert {e["name"]: e["state"] for e in index} == {"fraud-mlp": "READY", "mixed": "READY",
                                                       "strings": "READY"}
