"""Model lifecycle on a real server: version policy, hot reload under load, corrupt versions,
explicit load/unload, and Triton repositories without rtinfer's manifest."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest_helpers import call, running
from tritonclient.utils import InferenceServerException

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve import create_app, load_repository

X = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)


def _triton_model(cnn: ImportedModel, repo: Path, name: str, pbtxt: str,
                  version: int = 1, payload: bytes | None = None) -> Path:
    """``<repo>/<name>/config.pbtxt`` + ``<version>/model.onnx``, written as Triton users do;
    the version folder appears at once (renamed from a staging folder)."""
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(pbtxt)
    staging = folder / f".staging-{version}"
    staging.mkdir()
    if payload is None:
        shutil.copyfile(cnn.path, staging / "model.onnx")
    else:
        (staging / "model.onnx").write_bytes(payload)
    staging.rename(folder / str(version))
    return folder


def _input() -> httpclient.InferInput:
    inp = httpclient.InferInput("image", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    return inp


def _state(url: str, name: str) -> dict[str, tuple[str, str]]:
    status, index = call(url, "/v2/repository/index", {})
    assert status == 200
    return {e.get("version", "-"): (e["state"], e["reason"]) for e in index if e["name"] == name}


def test_hot_reload_under_load_fails_no_request(cnn: ImportedModel, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    rtinfer.save_artifact(cnn, repo, "cnn")
    with rtinfer.load(cnn, threads=1) as s:
        want = s.run({"image": X})["logits"]
    models = load_repository(repo, threads=1, overrides={"max_batch_size": 4})
    app = create_app(models, poll_interval_s=0.05)
    seen: list[str] = []
    failures: list[InferenceServerException] = []
    with running(app) as url:
        client = httpclient.InferenceServerClient(url, concurrency=8)

        def wave() -> None:  # 8 requests in flight at once (tritonclient's gevent concurrency)
            for p in [client.async_infer("cnn", [_input()]) for _ in range(8)]:
                try:
                    result = p.get_result()
                except InferenceServerException as exc:
                    failures.append(exc)
                    continue
                seen.append(result.get_response()["model_version"])
                np.testing.assert_allclose(result.as_numpy("logits"), want, atol=1e-5)

        def waves_until(done: object) -> None:
            deadline = time.monotonic() + 60
            while not done() and time.monotonic() < deadline:  # type: ignore[operator]
                wave()
            assert done(), "the reload did not happen within 60 s"  # type: ignore[operator]

        wave()
        rtinfer.save_artifact(cnn, repo, "cnn")  # version 2 appears while requests run
        waves_until(lambda: seen[-8:] == ["2"] * 8)
        # A corrupt version 3: version 2 keeps serving and the index says why.
        _triton_model(cnn, repo, "cnn", (repo / "cnn" / "config.pbtxt").read_text(), 3,
                      payload=b"not an onnx model")
        waves_until(lambda: _state(url, "cnn").get("3", ("", ""))[0] == "UNAVAILABLE")
        wave()
        states = _state(url, "cnn")
    assert not failures, failures[:3]
    assert seen[:8] == ["1"] * 8 and seen[-8:] == ["2"] * 8
    assert states["2"] == ("READY", "") and "1" not in states  # latest:1 retired version 1
    assert "version 3 failed to load" in states["3"][1]


def test_version_policy_and_explicit_load_unload(cnn: ImportedModel, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for _ in range(3):
        rtinfer.save_artifact(cnn, repo, "cnn")
    (repo / "cnn" / "rtinfer.json").write_text('{"version_policy": {"latest": 2}}')
    with running(create_app(load_repository(repo, threads=1))) as url:
        client = httpclient.InferenceServerClient(url)
        assert client.get_model_metadata("cnn")["versions"] == ["2", "3"]
        assert client.is_model_ready("cnn", "2") and not client.is_model_ready("cnn", "1")
        assert client.infer("cnn", [_input()], model_version="2").get_response()[
            "model_version"] == "2"
        with pytest.raises(InferenceServerException, match="no ready version 1") as info:
            client.infer("cnn", [_input()], model_version="1")
        assert info.value.status() == "404"

        assert call(url, "/v2/repository/models/cnn/unload", {})[0] == 200
        assert not client.is_model_ready("cnn")
        assert _state(url, "cnn") == {"-": ("UNAVAILABLE", "unloaded")}
        with pytest.raises(InferenceServerException, match="not ready: unloaded"):
            client.infer("cnn", [_input()])
        assert call(url, "/v2/repository/models/cnn/load", {})[0] == 200
        assert client.is_model_ready("cnn") and client.is_server_ready()
        status, body = call(url, "/v2/repository/models/nope/load", {})
        assert status == 404 and "not in the repository" in body["error"]


def test_triton_repository_without_manifest_is_served_with_its_batching(
        cnn: ImportedModel, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _triton_model(cnn, repo, "digits", """
        name: "digits"
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]
        output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
        dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 200000 }
        parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
    """)
    _triton_model(cnn, repo, "broken", 'name: "broken"', payload=b"\x00garbage")
    repository = load_repository(repo)
    served = repository.resolve("digits")
    assert len(served.sessions) == 2 and served.session.threads == 1
    assert served.batcher.config.preferred_batch_size == (4,)
    with running(create_app(repository), probe="/v2/health/live") as url:
        client = httpclient.InferenceServerClient(url, concurrency=8)
        pending = [client.async_infer("digits", [_input()]) for _ in range(8)]
        assert all(p.get_result().as_numpy("logits").shape == (1, 10) for p in pending)
        stats = call(url, "/v2/models/digits/stats")[1]["model_stats"][0]
        assert stats["execution_count"] < 8  # batched as config.pbtxt asks
        assert client.get_model_metadata("digits")["platform"] == "onnxruntime_onnx"
        # One broken model: the server is not ready, says why, and serves the others.
        assert not client.is_server_ready()
        state, reason = _state(url, "broken")["1"]
        assert state == "UNAVAILABLE" and "version 1 failed to load" in reason


def test_each_version_is_served_on_the_engine_its_artifact_records(cnn: ImportedModel,
                                                                    tmp_path: Path) -> None:
    """save_artifact(engine=...) (what quantize and optimize write) decides the engine unless
    the command line or rtinfer.json says otherwise."""
    repo = tmp_path / "repo"
    rtinfer.save_artifact(cnn, repo, "cnn")
    rtinfer.save_artifact(cnn, repo, "cnn", engine="openvino")
    (repo / "cnn" / "rtinfer.json").write_text('{"version_policy": "all"}')
    with running(create_app(load_repository(repo, threads=1))) as url:
        client = httpclient.InferenceServerClient(url)
        assert client.get_model_metadata("cnn", "1")["platform"] == "onnxruntime_onnx"
        assert client.get_model_metadata("cnn", "2")["platform"] == "openvino"
        with rtinfer.load(cnn) as s:
            expected = s.run({"image": X})["logits"]
        got = client.infer("cnn", [_input()], model_version="2").as_numpy("logits")
        np.testing.assert_allclose(got, expected, atol=1e-4)
    with running(create_app(load_repository(repo, engine="onnxruntime", threads=1))) as url:
        client = httpclient.InferenceServerClient(url)
        assert client.get_model_metadata("cnn", "2")["platform"] == "onnxruntime_onnx"


@pytest.mark.slow
def test_rss_stays_flat_across_unload_and_load(tmp_path: Path) -> None:
    """A 48 MB model unloaded and loaded 12 times: freed memory goes back to the OS (without
    it, glibc's arenas kept it: +80 MB a cycle on the first cycles, measured). Measured in a
    fresh process: a test worker's RSS also carries what earlier test files left behind."""
    import subprocess
    import sys

    from hostile_models import build_big_model

    build_big_model(tmp_path / "big")
    script = f"""
import asyncio, numpy as np, psutil
from rtinfer.serve import load_repository
process, x = psutil.Process(), np.ones((4, 2048), np.float32)

async def cycles():
    repo = load_repository({str(tmp_path)!r}, threads=1)
    await repo.resolve("big").batcher.submit({{"x": x}})
    await repo.unload_model("big")
    await repo.load_model("big")
    before = process.memory_info().rss  # after one full cycle: steady state
    for _ in range(12):
        await repo.unload_model("big")
        await repo.load_model("big")
        await repo.resolve("big").batcher.submit({{"x": x}})
    after = process.memory_info().rss
    await repo.close()
    print(before, after)

asyncio.run(cycles())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = map(int, done.stdout.split()[-2:])
    assert after - before < 100 << 20, f"RSS grew {(after - before) >> 20} MB in 12 cycles"
