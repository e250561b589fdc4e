"""The online accuracy guard: a sampled share of live requests shadowed on the float reference,
off the request's path; a broken int8 version is rolled back under load without a failed
request, a healthy one is left alone, and a busy reference drops samples and counts them."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest_helpers import running

import rtinfer
from rtinfer.deploy.settings import GuardConfig, read_model_config
from rtinfer.errors import ConfigError
from rtinfer.serve import create_app, load_repository
from rtinfer.serve.guard import row_scores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versions(perception_kit: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The kit's float CNN, its static int8 form, and that int8 form with one wrong scale."""
    import onnx
    from onnx import numpy_helper

    from rtinfer.optimize import Quantize
    from rtinfer.optimize.passes.quantize import quantize

    tmp = tmp_path_factory.mktemp("guard")
    original = rtinfer.import_model(perception_kit.model_path)
    int8 = quantize(original, Quantize(), perception_kit.split("calibration").inputs)
    graph = onnx.load(str(int8.path))
    inits = {i.name: i for i in graph.graph.initializer}
    # The last weight's DequantizeLinear: its scale negated flips the logits' order.
    weight_dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"
                 and n.input[0] in inits and inits[n.input[0]].dims]
    scale = inits[weight_dq[-1].input[1]]
    scale.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(scale), scale.name))
    onnx.save(graph, str(tmp / "broken.onnx"))
    broken = rtinfer.import_model(str(tmp / "broken.onnx"))
    images = perception_kit.split("test").inputs
    name = next(iter(images))
    return {"original": original, "int8": int8, "broken": broken, "input": name,
            "kit": perception_kit,
            "images": images[name][:64], "tmp": tmp}


def _repo(tmp: Path, original: Any, candidate: Any, name: str) -> Path:
    repo = tmp / name
    rtinfer.save_artifact(original, repo, "cnn")                              # version 1
    rtinfer.save_artifact(candidate, repo, "cnn", reference={"version": 1})   # version 2
    return repo


def _load(url: str, images: np.ndarray, input_name: str, requests: int,
          connections: int = 4) -> list[tuple[str, int]]:
    """``requests`` one-image requests over ``connections``: (model_version, top-1) each."""
    def one(i: int) -> tuple[str, int]:
        client = httpclient.InferenceServerClient(url)
        x = httpclient.InferInput(input_name, [1, *images.shape[1:]], "FP32")
        x.set_data_from_numpy(images[i % len(images)][None])
        res = client.infer("cnn", [x])
        return res.get_response()["model_version"], int(res.as_numpy(
            res.get_response()["outputs"][0]["name"]).argmax())

    with ThreadPoolExecutor(connections) as pool:
        return list(pool.map(one, range(requests)))  # an exception here is a failed request


def _get(url: str, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(f"http://{url}{path}", method=method,
                                 data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read().decode()
    return json.loads(body) if path != "/metrics" else body


def _metric(text: str, name: str) -> float:
    rows = [line for line in text.splitlines()
            if line.startswith(name) and 'model="cnn"' in line and 'version="2"' in line]
    assert rows, name
    return float(rows[0].rsplit(" ", 1)[1])


def test_a_broken_int8_version_is_rolled_back_without_a_failed_request(
        versions: dict[str, Any]) -> None:
    repo = _repo(versions["tmp"], versions["original"], versions["broken"], "broken")
    capture = versions["tmp"] / "captured"
    window = 40
    guard = (f"sample=1,metric=top1_agreement,threshold=0.9,window={window},"
             f"action=rollback,capture={capture},capture_max=5")
    app = create_app(load_repository(repo, threads=1, overrides={"guard": guard}))
    with running(app) as url:
        index = {e.get("version"): e for e in _get(url, "/v2/repository/index", "POST")}
        assert index["2"]["guard"]["state"] == "warming" and index["1"]["state"] == "READY"
        answers = _load(url, versions["images"], versions["input"], 6 * window)
        served = [v for v, _ in answers]
        assert served[0] == "2" and served[-1] == "1"  # switched, and every request answered
        # Within the window: the verdict came as soon as one window of samples was scored
        # (requests whose sample found the shadow queue full were answered, not scored).
        assert served.index("1") <= 3 * window
        with rtinfer.load(versions["original"], threads=1) as ref:
            out = ref.spec.output_names[0]
            want = [int(ref.run({versions["input"]: versions["images"][i % 64][None]})[out]
                        .argmax()) for i in range(len(answers))]
        assert all(a[1] == w for a, w in zip(answers, want, strict=True) if a[0] == "1")

        entry = {e.get("version"): e for e in _get(url, "/v2/repository/index", "POST")}["2"]
        assert entry["guard"]["state"] == "rolled_back" and entry["guard"]["serving"] == "1"
        assert entry["guard"]["rolled_back_after"] == window
        assert "top1_agreement" in entry["reason"] and "version 1" in entry["reason"]
        metrics = _get(url, "/metrics")
        assert _metric(metrics, "rtinfer_guard_state") == 2
        assert _metric(metrics, "rtinfer_guard_rollbacks_total") == 1
        assert _metric(metrics, "rtinfer_guard_samples_total") >= window
        assert _metric(metrics, "rtinfer_guard_score") < 0.9

        # Captured disagreeing inputs: npz named after the inputs, capped, calibration-ready.
        files = sorted((capture / "cnn" / "2").glob("*.npz"))
        assert len(files) == 5
        with np.load(files[0]) as got:
            assert set(got.files) == {versions["input"]}
            assert got[versions["input"]].shape == (1, *versions["images"].shape[1:])

        # Switching back is explicit; then the broken version answers again.
        assert _get(url, "/v2/repository/models/cnn/guard/reset", "POST") == {"reset": 1}
        assert _load(url, versions["images"], versions["input"], 4, 1)[0][0] == "2"

    # The captures calibrate a new quantization (rtinfer quantize --calibration-extra).
    from rtinfer.optimize.run import run_quantize

    said: list[str] = []
    result = run_quantize(None, kit=versions["kit"], calibration_extra=capture,  # every .npz
                          try_dynamic=False, qat=None, progress=said.append)
    assert any("5 extra input(s)" in line for line in said)
    assert result["config"]["calib_samples"] == 128 + 5


def test_a_healthy_int8_version_serves_ten_windows_without_rollback(
        versions: dict[str, Any]) -> None:
    repo = _repo(versions["tmp"], versions["original"], versions["int8"], "healthy")
    window = 30
    guard = f"sample=1,threshold=0.9,window={window},action=rollback,queue=512"
    app = create_app(load_repository(repo, threads=1, overrides={"guard": guard}),
                     grpc_port=0)
    with running(app) as url:
        answers = _load(url, versions["images"], versions["input"], 10 * window)
        assert {v for v, _ in answers} == {"2"}
        # gRPC requests are guarded the same way (the guard sits in the shared handler).
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        x = grpcclient.InferInput(versions["input"], [1, *versions["images"].shape[1:]], "FP32")
        x.set_data_from_numpy(versions["images"][:1])
        assert client.infer("cnn", [x]).get_response().model_version == "2"
        import time

        deadline = time.monotonic() + 60
        while True:  # the shadow scores after the answers: let it finish its queue
            entry = {e.get("version"): e for e in _get(url, "/v2/repository/index",
                                                       "POST")}["2"]
            guard_state = entry["guard"]
            if guard_state["samples"] >= 10 * window or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert guard_state["state"] == "ok", guard_state
        assert guard_state["score"] >= 0.9 and guard_state["samples"] >= 10 * window
        assert guard_state["dropped"] == 0


def test_a_reference_that_cannot_keep_up_drops_samples_and_counts_them(
        versions: dict[str, Any]) -> None:
    repo = _repo(versions["tmp"], versions["original"], versions["int8"], "busy")
    guard = "sample=1,threshold=0.5,window=1000,queue=1,action=alert"
    app = create_app(load_repository(repo, threads=1, overrides={"guard": guard}))
    with running(app) as url:
        answers = _load(url, versions["images"], versions["input"], 200, connections=8)
        assert {v for v, _ in answers} == {"2"}  # an alert never moves traffic
        status = {e.get("version"): e for e in _get(url, "/v2/repository/index",
                                                     "POST")}["2"]["guard"]
        assert status["dropped"] > 0
        assert status["dropped"] + status["samples"] <= 200
        assert _metric(_get(url, "/metrics"), "rtinfer_guard_dropped_total") == \
            status["dropped"]


def test_a_version_without_a_reference_serves_unguarded_and_says_why(
        versions: dict[str, Any], tmp_path: Path) -> None:
    rtinfer.save_artifact(versions["int8"], tmp_path / "repo", "cnn")
    repo = load_repository(tmp_path / "repo", threads=1,
                           overrides={"guard": "sample=0.5,action=rollback"})
    entry = repo.index()[0]
    assert entry["state"] == "READY" and entry["guard"]["state"] == "off"
    assert "names no reference" in entry["guard"]["reason"]
    assert repo.resolve("cnn").guard is None


def test_guard_settings_are_checked_and_rtinfer_json_may_not_write_elsewhere(
        tmp_path: Path) -> None:
    cfg = GuardConfig.parse("sample=0.02,metric=cosine,threshold=0.99,window=500,action=alert")
    assert cfg is not None and (cfg.metric, cfg.window, cfg.verdict_after) == ("cosine", 500,
                                                                               500)
    assert GuardConfig.parse("off") is None
    for bad, why in (("sample=0", "sample"), ("sample=2", "sample"), ("metric=f1", "metric"),
                     ("action=page", "action"), ("window=0", "window"), ("speed=1", "unknown"),
                     ("sample", "key=value"), ("min_samples=900,window=500", "min_samples")):
        with pytest.raises(ConfigError, match=why):
            GuardConfig.parse(bad)
    folder = tmp_path / "m"
    folder.mkdir()
    for capture in ("/tmp/elsewhere", "../up", "2", ".hidden"):
        (folder / "rtinfer.json").write_text(json.dumps({"guard": {"capture": capture}}))
        with pytest.raises(ConfigError, match="guard.capture"):
            read_model_config(folder)
    (folder / "rtinfer.json").write_text(json.dumps({"guard": {"capture": "captured"}}))
    assert read_model_config(folder).guard.capture == "captured"  # type: ignore[union-attr]
    # The command line (the operator) may name any folder.
    over = read_model_config(folder, {"guard": "capture=/var/tmp/x"})
    assert over.guard is not None and over.guard.capture == "/var/tmp/x"


def test_row_scores() -> None:
    a = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.6]])
    b = np.array([[0.2, 0.7], [0.1, 0.9], [0.4, 0.7]])
    assert row_scores(a, b, "top1_agreement").tolist() == [1.0, 0.0, 1.0]
    cos = row_scores(a, -a, "cosine")
    assert np.allclose(cos, -1.0)
    assert row_scores(np.zeros((2, 3)), np.zeros((2, 3)), "cosine").tolist() == [1.0, 1.0]
    assert row_scores(a, a[:2], "top1_agreement").tolist() == [0.0, 0.0, 0.0]
    assert row_scores(a, b, "top1_agreement", rows=False).tolist() == [0.0]


def test_under_workers_each_worker_rolls_back_and_a_reset_reaches_both(
        versions: dict[str, Any]) -> None:
    import time
    from http.client import HTTPConnection

    import psutil
    from conftest_helpers import children_of, serve_process, wait_ready

    from rtinfer.serve.inthread import free_port

    repo = _repo(versions["tmp"], versions["original"], versions["broken"], "workers")
    port = free_port()
    x = versions["images"][:1]
    body = json.dumps({"inputs": [{"name": versions["input"], "datatype": "FP32",
                                   "shape": list(x.shape), "data": x.ravel().tolist()}]})

    def version_of(conn: HTTPConnection) -> str:
        conn.request("POST", "/v2/models/cnn/infer", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        return str(json.loads(response.read())["model_version"])

    with serve_process(str(repo), "--port", str(port), "--workers", "2", "--threads", "1",
                       "--guard", "sample=1,window=20,threshold=0.9,action=rollback") as proc:
        wait_ready(f"127.0.0.1:{port}", proc)
        workers = {p.pid for p in children_of(proc) if "spawn_main" in " ".join(p.cmdline())}
        conns: dict[int, HTTPConnection] = {}
        for _ in range(200):  # a keep-alive connection accepted by each worker
            conn = HTTPConnection("127.0.0.1", port, timeout=30)
            conn.connect()
            client = conn.sock.getsockname()
            owner = next(c.pid for c in psutil.net_connections("tcp")
                         if c.raddr and tuple(c.raddr) == tuple(client))
            if owner in workers and owner not in conns:
                conns[owner] = conn
            else:
                conn.close()
            if len(conns) == 2:
                break
        assert len(conns) == 2
        for conn in conns.values():  # each worker judges its own traffic
            seen = [version_of(conn) for _ in range(20)]
            deadline = time.monotonic() + 30
            while seen[-1] != "1" and time.monotonic() < deadline:
                seen.append(version_of(conn))
            assert seen[0] == "2" and seen[-1] == "1"
        metrics = _get(f"127.0.0.1:{port}", "/metrics")
        assert _metric(metrics, "rtinfer_guard_rollbacks_total") == 2  # summed over workers
        assert _metric(metrics, "rtinfer_guard_state") == 2
        a, b = conns.values()
        a.request("POST", "/v2/repository/models/cnn/guard/reset", "{}")
        assert json.loads(a.getresponse().read()) == {"reset": 1}
        assert version_of(a) == "2"
        deadline = time.monotonic() + 10
        while version_of(b) != "2":  # the other worker follows within its control poll
            assert time.monotonic() < deadline, "the reset did not reach the other worker"
            time.sleep(0.1)
        for conn in conns.values():
            conn.close()


def test_a_rollback_survives_reloads_and_a_retired_guard_samples_nothing(
        versions: dict[str, Any], tmp_path: Path) -> None:
    """A config edit reloads every version (same files): the verdict is kept; a broken
    rtinfer.json changes nothing that serves; a retired version's guard stays stopped."""
    import asyncio

    repo_dir = _repo(tmp_path, versions["original"], versions["int8"], "r")
    settings = repo_dir / "cnn" / "rtinfer.json"
    settings.write_text(json.dumps({"guard": {"sample": 1.0, "window": 5,
                                              "action": "rollback"}}))
    x = {versions["input"]: versions["images"][:1]}

    async def scenario() -> None:
        repo = load_repository(repo_dir, threads=1)
        guard = repo.served["cnn"][2].guard
        assert guard is not None and repo.resolve("cnn").version == "2"
        for _ in range(5):
            guard._score(0.0)  # five disagreeing samples: the verdict
        assert guard.state == "rolled_back" and repo.resolve("cnn").version == "1"

        settings.write_text(json.dumps({"guard": {"sample": 1.0, "window": 5,
                                                  "action": "rollback"},
                                        "max_queue_size": 77}))
        await repo.poll()  # every version reloaded with the new setting
        assert repo.served["cnn"][2].config.max_queue_size == 77
        assert repo.resolve("cnn").version == "1"
        assert repo.served["cnn"][2].guard is not guard and guard._stopped
        guard.observe(x, x)  # the old guard takes no more samples
        assert guard._task is None

        settings.write_text("{not json")
        await repo.poll()
        assert repo.resolve("cnn").version == "1"  # still rolled back, still guarded
        await repo.close()

    asyncio.run(scenario())


def test_a_capture_folder_in_a_version_folder_or_out_by_a_link_turns_the_guard_off(
        versions: dict[str, Any], tmp_path: Path) -> None:
    import os

    repo_dir = _repo(tmp_path, versions["original"], versions["int8"], "c")
    repo = load_repository(repo_dir, threads=1,
                           overrides={"guard": f"sample=0.5,capture={repo_dir}"})
    entry = {e.get("version"): e for e in repo.index()}["2"]
    assert entry["guard"]["state"] == "off" and "version folders" in entry["guard"]["reason"]
    assert repo.resolve("cnn").version == "2"  # the version itself still serves

    os.symlink(tmp_path, repo_dir / "cnn" / "captured")  # a link out of the model folder
    (repo_dir / "cnn" / "rtinfer.json").write_text(json.dumps(
        {"guard": {"sample": 0.5, "capture": "captured"}}))
    repo = load_repository(repo_dir, threads=1)
    entry = {e.get("version"): e for e in repo.index()}["2"]
    assert entry["guard"]["state"] == "off" and "outside" in entry["guard"]["reason"]


def test_a_reference_never_becomes_the_default_when_its_version_fails_to_load(
        versions: dict[str, Any], tmp_path: Path) -> None:
    from rtinfer.errors import ModelNotFoundError

    repo_dir = _repo(tmp_path, versions["original"], versions["int8"], "f")
    model = repo_dir / "cnn" / "2" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-64])  # its hash no longer matches the manifest
    repo = load_repository(repo_dir, threads=1, overrides={"guard": "sample=0.5"})
    assert repo.resolve("cnn", "1").version == "1"  # loaded, as version 2's reference
    with pytest.raises(ModelNotFoundError, match="not ready"):
        repo.resolve("cnn")
    assert not repo.ready()
    assert {e.get("version"): e["state"] for e in repo.index()} == {"1": "READY",
                                                                   "2": "UNAVAILABLE"}


def test_a_corrupt_successor_leaves_the_serving_original_in_place(
        versions: dict[str, Any], tmp_path: Path) -> None:
    import asyncio

    repo_dir = tmp_path / "repo"
    rtinfer.save_artifact(versions["original"], repo_dir, "cnn")

    async def scenario() -> None:
        repo = load_repository(repo_dir, threads=1, overrides={"guard": "sample=0.5"})
        assert repo.resolve("cnn").version == "1"
        rtinfer.save_artifact(versions["int8"], repo_dir, "cnn", reference={"version": 1})
        model = repo_dir / "cnn" / "2" / "model.onnx"
        model.write_bytes(model.read_bytes()[:-64])
        await repo.poll()
        assert repo.resolve("cnn").version == "1" and repo.ready()
        await repo.close()

    asyncio.run(scenario())
