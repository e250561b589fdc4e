"""QAT: config, clear errors, the fine-tune → float export → QDQ path, and its place in the loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

import rtinfer
from rtinfer.errors import ExportError
from rtinfer.kits.base import torch_threads
from rtinfer.metrics import accuracy
from rtinfer.models import ImportedModel
from rtinfer.optimize import Budget, Quantize, fidelity, quantize, quantize_within_budget
from rtinfer.optimize.passes.qat import QAT, finetune

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


# A case where post-training int8 misses an accuracy budget and QAT brings it back. The budget
# was fixed before any measurement: 1 point of held-out accuracy.
RECOVERY_BUDGET = Budget.parse("1pt", "accuracy")
# rtinfer's default (per-channel weights), and per-tensor weights as some int8 targets need.
RECOVERY_CONFIGS = {"per-channel": Quantize(), "per-tensor": Quantize(per_channel=False)}
RECOVERY_QAT = QAT(steps=2000, lr=1e-2, batch=64)
_OUTLIER = 100.0


@dataclass
class OutlierCase:
    """The float model and its data: train inputs also calibrate; validation decides the
    budget; test is held out from everything (training, calibration, decisions)."""

    model: ImportedModel
    train: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]
    y_validation: np.ndarray
    test: dict[str, np.ndarray]
    y_test: np.ndarray


def outlier_digits_case(seed: int = 0) -> OutlierCase:
    """scikit-learn's real handwritten digits (1,797 8x8 scans; 60/20/20 stratified split), a
    64-32-10 ReLU MLP trained normally (Adam, cross-entropy, 100 epochs), then hidden unit 0
    made a x100 outlier by a function-preserving rescale (its incoming weights and bias x100,
    its outgoing weights /100): the float model's outputs are unchanged, but one unit now sets
    the per-tensor weight scale of the first layer and the range of the hidden activation,
    the outlier-channel structure int8 rounds badly (transformers grow such channels)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed,
                                                  stratify=y)
    x_val, x_te, y_val, y_te = train_test_split(x_rest, y_rest, test_size=0.5,
                                                random_state=seed, stratify=y_rest)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    inputs, labels = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    order = torch.Generator().manual_seed(seed)
    with torch_threads(1):  # one thread: exactly repeatable, and fastest at this size
        for _epoch in range(100):
            for rows in torch.randperm(len(inputs), generator=order).split(64):
                loss = nn.functional.cross_entropy(net(inputs[rows]), labels[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        net[0].weight[0] *= _OUTLIER
        net[0].bias[0] *= _OUTLIER
        net[2].weight[:, 0] /= _OUTLIER
    model = rtinfer.import_model(net, (inputs[:2],), input_names=["x"],
                                 output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    return OutlierCase(model, {"x": x_tr}, {"x": x_val}, y_val, {"x": x_te}, y_te)


def _accuracy(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {"accuracy": accuracy(targets, outputs["logits"])}


def held_out_accuracy(model: ImportedModel, case: OutlierCase) -> tuple[float, float]:
    """Accuracy on the validation and the test split, through ONNX Runtime."""
    with rtinfer.load(model, "onnxruntime") as s:
        return (accuracy(case.y_validation, s.run(case.validation)["logits"]),
                accuracy(case.y_test, s.run(case.test)["logits"]))


@pytest.fixture(scope="module")
def outlier_case() -> OutlierCase:
    return outlier_digits_case()


@pytest.mark.parametrize("name", list(RECOVERY_CONFIGS))
def test_qat_recovers_what_ptq_loses_on_an_outlier_unit(outlier_case: OutlierCase,
                                                        name: str) -> None:
    case, config = outlier_case, RECOVERY_CONFIGS[name]
    float_acc = held_out_accuracy(case.model, case)
    assert min(float_acc) >= 0.95  # a normally trained model, not a broken one
    ptq = held_out_accuracy(quantize(case.model, config, case.train), case)
    # PTQ alone misses the 1-point budget on both held-out splits, with margin (measured:
    # per-channel 2.2 and 2.2 points lost, per-tensor 7.2 and 3.9).
    ptq_drop = [f - p for f, p in zip(float_acc, ptq, strict=True)]
    assert min(ptq_drop) >= 1.5 * RECOVERY_BUDGET.max_drop, ptq_drop

    calls: list[Quantize] = []

    def hook(cfg: Quantize) -> ImportedModel:
        calls.append(cfg)
        return finetune(case.model, cfg, RECOVERY_QAT, case.train, case.train, threads=1)

    result = quantize_within_budget(case.model, config, case.train, case.validation,
                                    RECOVERY_BUDGET, targets=case.y_validation, metric=_accuracy,
                                    finetune=hook)
    # Other calibrations did not rescue it; QAT did, with every layer still int8.
    assert len(calls) == 1 and not any(s["within_budget"] for s in result.steps[:-1])
    assert result.status == "ok" and result.finetuned and result.kept_in_float == []
    assert result.steps[-1]["what"] == "QAT fine-tuned, everything quantized"
    assert result.model is not None
    graph = onnx.load(str(result.model.path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 2
    for gemm in gemms:
        weight = producers[gemm.input[1]]
        assert weight.op_type == "DequantizeLinear" and weight.input[0] in int8, gemm.name
    qat = held_out_accuracy(result.model, case)
    # Within budget on validation (which decided) and on test (held out from everything).
    # Measured: per-channel -0.6 and 0.0 points, per-tensor -0.6 and -0.8 (negative: above
    # float); seeds 1-4 of the case: at most 0.3 and 0.8.
    qat_drop = [f - q for f, q in zip(float_acc, qat, strict=True)]
    assert max(qat_drop) <= RECOVERY_BUDGET.max_drop, qat_drop
