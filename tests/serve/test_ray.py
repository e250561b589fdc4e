"""rtinfer on Ray: a real local Ray instance on loopback (2 CPUs, no dashboard), Ray Serve with
two replicas of rtinfer's server behind Ray's proxy, Ray Data batch inference, and the KubeRay
manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest_helpers import KEY

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve.inthread import free_port

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")  # rtinfer[ray]; make test installs it
X = np.random.default_rng(11).standard_normal((6, 1, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    from rtinfer.scale.ray_serve import connect

    connect(None, num_cpus=2)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def on_ray(local_ray: Any, cnn: ImportedModel, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, Path]]:
    """The small CNN served by two replicas with an API key, polling the repository."""
    from ray import serve

    from rtinfer.scale.ray_serve import application

    repo = tmp_path_factory.mktemp("ray-repo")
    rtinfer.save_artifact(cnn, repo, "cnn")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = {"repo": str(repo), "overrides": {}, "drain_timeout_s": 5.0, "api_key": KEY,
                "max_body_bytes": 1 << 20, "poll_interval_s": 0.5}
    serve.run(application(settings, replicas=2), name="rtinfer", route_prefix="/")
    yield f"127.0.0.1:{port}", repo
    serve.delete("rtinfer")


def _replicas() -> int:
    from ray import serve

    status = serve.status().applications["rtinfer"].deployments["rtinfer"]
    return int(status.replica_states.get("RUNNING", 0))


def _every_replica(check: Any, timeout_s: float = 30, calls: int = 24) -> None:
    """``check()`` true for ``calls`` calls in a row (Ray's proxy spreads them over both
    replicas: all landing on one has odds of 2 in 2**24), within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(check() for _ in range(calls)):
            return
        time.sleep(0.3)
    raise AssertionError("not every replica followed within the timeout")


def test_predict_on_ray_data_equals_in_process_row_for_row(local_ray: Any, fraud_kit: Any,
                                                           tmp_path: Path) -> None:
    """First in the file: its two actors take both CPUs, which the serving replicas hold
    once they start."""
    from rtinfer.scale.batch import predict, write_predictions

    test = fraud_kit.split("test")
    rows = (np.arange(len(test)), test.inputs)
    here = predict(fraud_kit.model_path, rows, threads=1, batch_size=500)
    there = predict(fraud_kit.model_path, rows, threads=1, batch_size=500, on_ray=True,
                    concurrency=2)
    assert there.where.startswith("Ray Data, 2 actor")
    assert here.outputs.keys() == there.outputs.keys()
    for name in here.outputs:
        np.testing.assert_array_equal(here.outputs[name], there.outputs[name])
    one, two = write_predictions(tmp_path / "a.csv", here), write_predictions(tmp_path / "b.csv",
                                                                              there)
    assert one.read_bytes() == two.read_bytes()


def test_predict_cli_reads_a_csv_by_id_and_writes_parquet(fraud_kit: Any, tmp_path: Path
                                                          ) -> None:
    """In a child process: the command a user runs, from a CSV with an id column."""
    import pyarrow.parquet as pq

    test = fraud_kit.split("test")
    x = test.inputs["features"][:50]
    rows = ["txn," + ",".join(f"f{i}" for i in range(x.shape[1]))]
    rows += [f"t{i}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(x)]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
    cmd = [sys.executable, "-m", "rtinfer.cli", "predict", str(fraud_kit.model_path),
           str(tmp_path / "rows.csv"), str(tmp_path / "out.parquet"), "--id-column", "txn"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "50 rows" in done.stdout
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert table["id"] == [f"t{i}" for i in range(50)]
    with rtinfer.load(fraud_kit.model_path, threads=1) as session:
        want = session.run({"features": x})
    name = next(iter(want))
    got = np.stack([table[f"{name}_{i}"] for i in range(want[name].shape[1])], axis=1)
    np.testing.assert_allclose(got, want[name], rtol=1e-6)
    wrong = subprocess.run([*cmd[:5], str(tmp_path / "rows.csv"), str(tmp_path / "x.npz")],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode != 0 and "features per row" in wrong.stderr  # 'txn' counted
    assert not (tmp_path / "x.npz").exists()


def test_two_replicas_answer_tritonclient_json_and_binary_like_in_process(
        on_ray: tuple[str, Path], cnn: ImportedModel) -> None:
    import tritonclient.http as httpclient

    url, _ = on_ray
    assert _replicas() == 2
    with rtinfer.load(cnn, "onnxruntime", threads=1) as session:
        expected = [session.run({"image": x})["logits"] for x in X]
    client = httpclient.InferenceServerClient(url, concurrency=4)
    headers = {"X-API-Key": KEY}
    assert client.is_server_live()
    for binary in (False, True):
        for x, want in zip(X, expected, strict=True):
            inp = httpclient.InferInput("image", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = httpclient.InferRequestedOutput("logits", binary_data=binary)
            got = client.infer("cnn", [inp], outputs=[out], headers=headers).as_numpy("logits")
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="401|API key"):
        client.get_model_metadata("cnn")  # the key is required through Ray's proxy too
    client.close()


def test_metrics_cover_every_replica(on_ray: tuple[str, Path]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    url, _ = on_ray

    def successes() -> float:
        text = _get(url, "/metrics").decode()
        for family in text_string_to_metric_families(text):
            if family.name == "rtinfer_request_success":
                return sum(s.value for s in family.samples if s.name.endswith("_total"))
        return 0.0

    def settled() -> float:  # every replica has pushed what it answered (every 0.5 s)
        seen = [successes()]
        while len(seen) < 2 or seen[-1] != seen[-2]:
            time.sleep(1.0)
            seen.append(successes())
        return seen[-1]

    before = settled()
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(X[0].shape),
                        "data": X[0].ravel().tolist()}]}
    for _ in range(20):
        _post(url, "/v2/models/cnn/infer", body)
    deadline = time.monotonic() + 10
    while successes() - before != 20 and time.monotonic() < deadline:
        time.sleep(0.3)  # the other replica pushes its figures every 0.5 s
    assert successes() - before == 20  # both replicas' requests, whichever answered
    assert "process_cpu_seconds_total" not in _get(url, "/metrics").decode()


def test_load_unload_and_a_new_version_reach_both_replicas(on_ray: tuple[str, Path],
                                                           cnn: ImportedModel) -> None:
    url, repo = on_ray

    def ready(version: str = "") -> bool:
        path = f"/v2/models/cnn/versions/{version}/ready" if version else "/v2/models/cnn/ready"
        return _status(url, path) == 200

    _post(url, "/v2/repository/models/cnn/unload", {})
    _every_replica(lambda: not ready())
    _post(url, "/v2/repository/models/cnn/load", {})
    _every_replica(ready)
    shutil.copytree(repo / "cnn" / "1", repo / "cnn" / "2")  # a new version: each replica polls
    _every_replica(lambda: ready("2"), timeout_s=60)
    (repo / "cnn" / "3").mkdir()
    (repo / "cnn" / "3" / "model.onnx").write_bytes(b"not a model")
    time.sleep(2)  # polled by both: version 3 fails, version 2 keeps serving
    _every_replica(lambda: ready("2") and not ready("3"))
    index = json.loads(_post(url, "/v2/repository/index", {}))
    failed = [e for e in index if e.get("version") == "3"]
    assert failed and failed[0]["state"] == "UNAVAILABLE" and failed[0]["reason"]


def test_a_killed_replica_is_replaced_while_the_other_answers(on_ray: tuple[str, Path]
                                                              ) -> None:
    """Requests go on during the kill; Ray's proxy retries a request whose replica died."""
    from ray import serve

    url, _ = on_ray
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(X[0].shape),
                        "data": X[0].ravel().tolist()}]}
    for _ in range(4):
        _post(url, "/v2/models/cnn/infer", body)
    def replicas() -> set[str]:
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::rtinfer#rtinfer#")}

    before = replicas()
    victim = sorted(before)[0]
    namespace = next(a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"] == victim)
    ray.kill(ray.get_actor(victim, namespace=namespace), no_restart=True)
    failed = answered = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            _post(url, "/v2/models/cnn/infer", body)
            answered += 1
        except (urllib.error.HTTPError, urllib.error.URLError):
            failed += 1
        now = replicas()
        if victim not in now and len(now) == 2 and _replicas() == 2 and answered >= 20:
            break
    now = replicas()
    assert victim not in now and len(now - before) == 1 and _replicas() == 2, serve.status()
    assert answered >= 20 and failed <= 2, (answered, failed)  # reported: 0 seen here


def test_predict_keeps_ids_as_the_file_has_them(tmp_path: Path) -> None:
    """A CSV id "007" stays "007"; a Parquet int64 above 2**53 stays exact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rtinfer.scale.batch import read_inputs
    from rtinfer.spec import ModelSpec, TensorSpec

    spec = ModelSpec(inputs=(TensorSpec("x", "float32", ("batch", 2)),),
                     outputs=(TensorSpec("y", "float32", ("batch", 1)),))
    (tmp_path / "rows.csv").write_text("id,a,b\n007,1.5,2\n9007199254740993,3,4\n")
    ids, inputs = read_inputs(tmp_path / "rows.csv", spec)
    assert ids.tolist() == ["007", "9007199254740993"]
    np.testing.assert_array_equal(inputs["x"], [[1.5, 2], [3, 4]])
    pq.write_table(pa.table({"a": [1.0, 3.0], "b": [2.0, 4.0],
                             "key": pa.array([9007199254740993, 7], pa.int64())}),
                   tmp_path / "rows.parquet")
    ids, inputs = read_inputs(tmp_path / "rows.parquet", spec, "key")
    assert ids.dtype == np.int64 and ids.tolist() == [9007199254740993, 7]
    np.testing.assert_array_equal(inputs["x"], [[1, 2], [3, 4]])
    with pytest.raises(rtinfer.InvalidInputError, match="no id column 'nope'"):
        read_inputs(tmp_path / "rows.csv", spec, "nope")


def test_kuberay_manifest_carries_what_rayservice_requires(cnn: ImportedModel,
                                                           tmp_path: Path) -> None:
    import yaml
    from ray.serve import Application

    from rtinfer.scale.ray_serve import build

    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    out = tmp_path / "rayservice.yaml"
    done = subprocess.run([sys.executable, "-m", "rtinfer.cli", "deploy", "kuberay",
                           str(tmp_path / "repo"), "--image", "registry.local/rtinfer:0.1",
                           "--claim", "models", "--autoscale", "1:3", "--threads", "2",
                           "--api-key-secret", "rtinfer-key", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    cluster = doc["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "registry.local/rtinfer:0.1"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    group = cluster["workerGroupSpecs"][0]
    assert group["groupName"] and (group["minReplicas"], group["maxReplicas"]) == (1, 3)
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["cpu"] == group["rayStartParams"]["num-cpus"] == "2"
    assert worker["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "rtinfer-key",
                                                             "key": "api-key"}
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in worker["volumeMounts"]
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    app = serve_config["applications"][0]
    assert app["import_path"] == "rtinfer.scale.ray_serve:build" and app["route_prefix"] == "/"
    # The builder takes exactly these arguments (the repository at this machine's path).
    args = {**app["args"], "repo": str(tmp_path / "repo"), "api_key_env": None}
    assert isinstance(build(args), Application)
    with pytest.raises(rtinfer.RtinferError, match="unknown rtinfer Ray Serve argument"):
        build({"repo": str(tmp_path / "repo"), "replica": 2})


def test_a_replica_reserves_the_cpus_its_engines_use(cnn: ImportedModel, tmp_path: Path
                                                    ) -> None:
    """threads x instances of the most demanding model, and its engines get that many cores
    (no thread count given: the cores are shared by the instances, as without Ray)."""
    from rtinfer.deploy.settings import read_model_config
    from rtinfer.scale.ray_serve import replica_cpus

    rtinfer.save_artifact(cnn, tmp_path / "repo", "a")
    rtinfer.save_artifact(cnn, tmp_path / "repo", "b")
    (tmp_path / "repo" / "a" / "rtinfer.json").write_text('{"threads": 2, "instances": 2}')
    (tmp_path / "repo" / "b" / "rtinfer.json").write_text('{"instances": 3}')
    settings = {"repo": str(tmp_path / "repo"), "overrides": {}}
    assert replica_cpus(settings) == 4  # a: 2 x 2; b: 1 (the default) x 3
    assert replica_cpus({**settings, "overrides": {"threads": 2}}) == 6
    from dataclasses import replace

    config = replace(read_model_config(tmp_path / "repo" / "b", {}), cores=4)
    assert config.thread_budget == 1  # 4 cores // 3 instances, whatever this machine has


def test_an_unreachable_head_is_one_clear_error(cnn: ImportedModel, tmp_path: Path) -> None:
    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    done = subprocess.run([sys.executable, "-m", "rtinfer.cli", "serve", str(tmp_path / "repo"),
                           "--ray", "--address", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot reach the Ray cluster at 127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


def _request(url: str, path: str, body: Any = None) -> urllib.request.Request:
    data = None if body is None else json.dumps(body).encode()
    return urllib.request.Request(f"http://{url}{path}", data,
                                  {"X-API-Key": KEY, "Content-Type": "application/json"})


def _get(url: str, path: str) -> bytes:
    with urllib.request.urlopen(_request(url, path), timeout=30) as r:
        body: bytes = r.read()
        return body


def _post(url: str, path: str, body: Any) -> bytes:
    with urllib.request.urlopen(_request(url, path, body), timeout=30) as r:
        answer: bytes = r.read()
        return answer


def _status(url: str, path: str) -> int:
    try:
        with urllib.request.urlopen(_request(url, path), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
