"""QAT: config, clear errors, the fine-tune → float export → QDQ path, and its place in the loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import rtinfer
from rtinfer.errors import ExportError
from rtinfer.models import ImportedModel
from rtinfer.optimize import Budget, Quantize, fidelity, quantize, quantize_within_budget
from rtinfer.optimize.qat import QAT, finetune

_CONFIG = Quantize(compute_inputs_only=True)


def _images(n: int, seed: int) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)}


def test_config_round_trips_and_rejects_bad_values() -> None:
    q = QAT(steps=50, lr=1e-4, batch=8)
    assert QAT.from_dict(q.to_dict()) == q and q.to_dict()["pass"] == "qat"
    with pytest.raises(ValueError, match=r"QAT.steps must be an int >= 1, got 0"):
        QAT(steps=0)
    with pytest.raises(ValueError, match=r"QAT.lr must be > 0"):
        QAT(lr=0.0)


def test_qat_needs_a_torch_module(tmp_path: Path, cnn: ImportedModel) -> None:
    onnx_only = rtinfer.import_model(cnn.path)
    with pytest.raises(ExportError, match="QAT needs the PyTorch module"):
        finetune(onnx_only, _CONFIG, QAT(steps=1), _images(8, 0), _images(8, 1))
    with pytest.raises(ValueError, match=r"QAT training data lacks input\(s\) \['image'\]"):
        finetune(cnn, _CONFIG, QAT(steps=1), {"x": np.zeros((2, 3, 32, 32), np.float32)},
                 _images(8, 1))


def test_finetune_exports_float_weights_that_quantize_and_run_on_both_engines(
        cnn: ImportedModel) -> None:
    train, calibration, held_out = _images(64, 0), _images(32, 1), _images(32, 2)
    tuned = finetune(cnn, _CONFIG, QAT(steps=20, lr=1e-4, batch=16), train, calibration)
    assert "QAT fine-tune (20 steps" in tuned.source.description
    assert tuned.spec == cnn.spec  # same names, dtypes and dynamic axes as the original
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load(str(tuned.path)).graph.node}
    q = quantize(tuned, _CONFIG, calibration)
    graph = onnx.load(str(q.path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        assert producers[conv.input[1]].op_type == "DequantizeLinear", conv.name
    with rtinfer.load(cnn) as f:
        reference = f.run(held_out)
    for engine in ("onnxruntime", "openvino"):
        with rtinfer.load(q, engine) as s:
            fid = fidelity(reference, s.run(held_out))["logits"]
        assert fid["cosine_min"] >= 0.99, engine  # faithful to the *original* float model


def test_loop_fine_tunes_only_when_ptq_misses_and_never_ships_over_budget(
        cnn: ImportedModel) -> None:
    calls: list[Quantize] = []

    def hook(cfg: Quantize) -> ImportedModel:
        calls.append(cfg)
        return finetune(cnn, cfg, QAT(steps=5, lr=1e-4, batch=16), _images(32, 0),
                        _images(16, 1))

    easy = quantize_within_budget(cnn, _CONFIG, _images(16, 1), _images(32, 2),
                                  Budget.parse("5pt", "logits.cosine"), finetune=hook,
                                  try_calibrations=False)
    assert easy.status == "ok" and not calls and not easy.finetuned
    # A worst-case cosine of 0.999999 is beyond int8: PTQ misses, QAT is tried, the layer
    # fallback is not allowed here (max_fallback=0), so nothing ships.
    strict = quantize_within_budget(cnn, _CONFIG, _images(16, 1), _images(32, 2),
                                    Budget.parse("0.0001pt", "logits.cosine"), finetune=hook,
                                    try_calibrations=False, max_fallback=0)
    assert calls == [_CONFIG]
    assert [s["what"] for s in strict.steps][:2] == ["everything quantized",
                                                     "QAT fine-tuned, everything quantized"]
    assert strict.status == "over_budget" and strict.model is None
    assert strict.to_dict()["finetuned"] == strict.finetuned
