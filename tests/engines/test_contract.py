"""The contract every engine passes: same outputs as PyTorch, thread budget honoured, bad
input rejected with rtinfer's own error naming the input, what came and what was expected."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

import rtinfer
from rtinfer import EngineUnavailableError, InvalidInputError, UnknownEngineError
from rtinfer.hardware import usable_cores
from rtinfer.models import ImportedModel, tokenize

ENGINES = ["onnxruntime", "openvino", "torch"]


def _cpu_per_wall(session: rtinfer.Session, feeds: dict[str, np.ndarray], calls: int) -> float:
    """Cores kept busy while running: CPU seconds of this process per wall second."""
    proc = psutil.Process()
    session.run(feeds)
    c0, t0 = proc.cpu_times(), time.perf_counter()
    for _ in range(calls):
        session.run(feeds)
    c1, t1 = proc.cpu_times(), time.perf_counter()
    return ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0)


@pytest.mark.parametrize("engine", ENGINES)
def test_cnn_outputs_match_torch(engine: str, cnn: ImportedModel, cnn_module) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = cnn_module(torch.from_numpy(x)).numpy()
    with rtinfer.load(cnn, engine, threads=1) as session:
        assert session.engine == engine
        got = session.run({"image": x})
    assert list(got) == ["logits"]
    np.testing.assert_allclose(got["logits"], want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_any_array_layout_gives_the_same_answer_and_results_are_the_callers(
        engine: str, cnn: ImportedModel) -> None:
    """Engines may read the caller's arrays in place (OpenVINO shares them): read-only request
    buffers, strided views and Fortran order answer alike, and neither a later call nor a
    change to the input alters a result already returned."""
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with rtinfer.load(cnn, engine, threads=1) as session:
        want = session.run({"image": x.copy()})["logits"]
        frozen = np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)   # as a request body
        wide = np.zeros((2, 3, 64, 32), np.float32)
        wide[:, :, ::2] = x
        for layout in (frozen, wide[:, :, ::2], np.asfortranarray(x)):
            np.testing.assert_allclose(session.run({"image": layout})["logits"], want,
                                       atol=1e-5, rtol=0)
        mine = x.copy()
        first = session.run({"image": mine})["logits"]
        mine[:] = 0.0
        session.run({"image": -x})
        np.testing.assert_allclose(first, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_input_is_rejected_clearly(engine: str, cnn: ImportedModel) -> None:
    x = np.zeros((2, 3, 32, 32), np.float32)
    with rtinfer.load(cnn, engine, threads=1) as s:
        with pytest.raises(InvalidInputError, match=r"missing input\(s\) \['image'\]; this model "
                           r"needs image float32 \(batch, 3, 32, 32\)"):
            s.run({})
        with pytest.raises(InvalidInputError, match=r"unknown input name\(s\) \['img'\]; this "
                           r"model's inputs are \['image'\]"):
            s.run({"image": x, "img": x})
        with pytest.raises(InvalidInputError, match=r"input 'image' has dtype float64, expected "
                           r"float32"):
            s.run({"image": x.astype(np.float64)})
        with pytest.raises(InvalidInputError, match=r"input 'image' has shape \(3, 32, 32\) "
                           r"\(rank 3\), expected rank 4"):
            s.run({"image": x[0]})
        with pytest.raises(InvalidInputError, match=r"input 'image' has size 28 on axis 2, "
                           r"expected 32"):
            s.run({"image": x[:, :, :28]})
        # After all that, the session still serves good input.
        assert s.run({"image": x})["logits"].shape == (2, 10)


def _working_threads(session: rtinfer.Session, feeds: dict[str, np.ndarray],
                     seconds: float = 1.5) -> int:
    """OS threads of this process that did a real share (a tenth of the busiest's) of the CPU
    work while running.

    Unlike cores-busy, this does not depend on the machine being idle: a contended thread
    still accumulates CPU time, just more slowly (make test runs two workers side by side).
    """
    proc = psutil.Process()
    session.run(feeds)
    before = {t.id: t.user_time + t.system_time for t in proc.threads()}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:  # per-thread times tick in 10 ms steps
        session.run(feeds)
    work = [t.user_time + t.system_time - before.get(t.id, 0.0) for t in proc.threads()]
    return sum(1 for w in work if w >= 0.1 * max(work))


@pytest.mark.parametrize("engine", [*ENGINES, "litert"])
@pytest.mark.parametrize("threads", [1, 2])
def test_thread_budget_takes_effect(engine: str, threads: int, cnn: ImportedModel,
                                    request: pytest.FixtureRequest) -> None:
    if threads > usable_cores():
        pytest.skip(f"needs {threads} usable cores")
    if engine == "litert":  # LiteRT runs TensorFlow models: the same CNN, built in Keras
        pytest.importorskip("tensorflow", reason="needs rtinfer[tensorflow]")
        cnn = rtinfer.import_model(request.getfixturevalue("keras_cnn"))
    feeds = cnn.spec.example_inputs(batch=256)  # enough work per call to be worth splitting
    with rtinfer.load(cnn, engine, threads=threads) as s:
        assert s.threads == threads  # as the runtime itself reports it
        busy = _cpu_per_wall(s, feeds, calls=20)
        working = _working_threads(s, feeds)
    # Load on the machine can only lower cores-busy, so the 1-thread bound is safe to assert;
    # for more threads, count the OS threads that shared the work instead.
    if threads == 1:
        assert busy < 1.25, f"{engine} kept {busy:.2f} cores busy with a 1-thread budget"
        assert working == 1, f"{engine} spread the work over {working} threads"
    else:
        assert working >= threads, f"{engine} used {working} working threads, not {threads}"


def test_unknown_engine_lists_the_choices(cnn: ImportedModel) -> None:
    with pytest.raises(UnknownEngineError, match=r"unknown engine 'tensorflow'; choose one of "
                       r"\['onnxruntime', 'openvino', 'torch', 'litert'\]"):
        rtinfer.load(cnn, "tensorflow")


def test_aliases_resolve(cnn: ImportedModel) -> None:
    with rtinfer.load(cnn, "OV", threads=1) as s:
        assert s.engine == "openvino"


def test_torch_engine_needs_a_torch_source(tmp_path: Path, cnn: ImportedModel) -> None:
    onnx_only = rtinfer.import_model(cnn.path)
    with pytest.raises(EngineUnavailableError, match="has no PyTorch source; load it with "
                       "engine='onnxruntime'"):
        rtinfer.load(onnx_only, "torch")


def test_missing_execution_provider_is_explained(cnn: ImportedModel) -> None:
    with pytest.raises(EngineUnavailableError, match=r"\['NoSuchExecutionProvider'\] are not in "
                       "this onnxruntime build"):
        rtinfer.load(cnn, "onnxruntime", providers=["NoSuchExecutionProvider"])


def test_threads_must_be_positive(cnn: ImportedModel) -> None:
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        rtinfer.load(cnn, threads=0)
    with pytest.raises(TypeError, match="threads must be an int"):
        rtinfer.load(cnn, threads="2")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_minilm_matches_pytorch_within_1e4(engine: str, minilm: ImportedModel,
                                           minilm_folder: Path, sentences: list[str]) -> None:
    feeds = tokenize(minilm_folder, sentences, seq_len=128)
    reference = minilm.load_torch()
    with torch.no_grad():
        want = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    with rtinfer.load(minilm, engine, threads=2) as s:
        got = s.run(feeds)
    mask = feeds["attention_mask"].astype(bool)  # padded positions are undefined by design
    hidden = np.abs(got["last_hidden_state"] - want.last_hidden_state.numpy())[mask]
    pooled = np.abs(got["pooler_output"] - want.pooler_output.numpy())
    assert hidden.max() < 1e-4, f"{engine}: token embeddings differ by {hidden.max():.2e}"
    assert pooled.max() < 1e-4, f"{engine}: pooled output differs by {pooled.max():.2e}"
