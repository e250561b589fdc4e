"""The budgeted loop: evaluation decides, sensitive layers stay float, over budget never ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rtinfer
from rtinfer.cli import app
from rtinfer.kits import Kit
from rtinfer.optimize import Budget, Quantize, kit_metric, quantize_within_budget
from rtinfer.optimize.budget import Limit
from rtinfer.optimize.evaluate import evaluate_candidate, fidelity, run_batches


def test_budget_parsing_says_absolute_or_relative() -> None:
    assert Budget.parse("0.5pt", "accuracy").limits == (Limit("accuracy", 0.005, "absolute"),)
    assert Budget.parse("1%", "accuracy").limits[0].allowed(0.9) == pytest.approx(0.009)
    with pytest.raises(ValueError, match="must say absolute or relative"):
        Budget.parse("0.5", "accuracy")


def test_fidelity_budget_on_worst_cosine() -> None:
    import numpy as np

    ref = {"emb": np.eye(3, dtype=np.float32)}
    cand = {"emb": np.eye(3, dtype=np.float32) + np.float32(0.05) * np.ones((3, 3), np.float32)}
    ev = evaluate_candidate(cand, ref, Budget.parse("1pt", "emb.cosine"))
    worst = ev.fidelity["emb"]["cosine_min"]
    assert ev.drop == pytest.approx(1 - worst) and ev.within_budget == (1 - worst <= 0.01)


def _perception_budget(kit: Kit, text: str, metric: str) -> rtinfer.optimize.QuantizeResult:
    val = kit.split("validation")
    return quantize_within_budget(
        rtinfer.import_model(kit.model_path), Quantize(), kit.split("calibration").inputs,
        val.inputs, Budget.parse(text, metric), targets=val.targets, metric=kit_metric(kit))


def test_within_budget_first_try(perception_kit: Kit) -> None:
    result = _perception_budget(perception_kit, "0.5pt", "top1")
    assert result.status == "ok" and result.kept_in_float == []
    assert result.evaluation is not None and result.evaluation.drop <= 0.005


def test_strict_budget_keeps_the_most_sensitive_layers_in_float(perception_kit: Kit) -> None:
    # Logits must keep a worst-case cosine of 0.99999: int8 everywhere cannot.
    result = _perception_budget(perception_kit, "0.001pt", "logits.cosine")
    assert result.steps[0]["what"] == "everything quantized"
    assert not result.steps[0]["within_budget"]
    ranked = [r["node"] for r in result.sensitivity]
    assert len(ranked) >= 8 and sorted(r["harm"] for r in result.sensitivity)[::-1] == [
        r["harm"] for r in result.sensitivity]
    if result.status == "ok":
        assert result.model is not None and result.evaluation.within_budget
        assert result.kept_in_float == ranked[:len(result.kept_in_float)]
        assert set(result.config.exclude) == set(result.kept_in_float)
    else:
        assert result.model is None  # over budget: nothing to ship


def test_cli_quantize_writes_an_artifact_with_recipe_and_figures(perception_kit: Kit,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    from rtinfer import kits

    monkeypatch.setenv("RTINFER_CACHE", str(tmp_path / "cache"))
    full = kits.kit_folder(kits.recipe("perception"), "full")
    full.parent.mkdir(parents=True)
    full.symlink_to(perception_kit.path)
    res = CliRunner().invoke(app, ["quantize", "--kit", "perception", "--max-drop", "0.5pt",
                                   "--out", str(tmp_path / "repo"), "--quiet", "--json",
                                   str(tmp_path / "q.json")])
    assert res.exit_code == 0, res.output
    assert "latency at batch 1" in res.output and "wrote" in res.output
    # Every limit shown with what was allowed, on validation and again on held-out data,
    # and the kit's shifted scans reported beside them.
    assert "the budget on the validation split" in res.output
    assert "the same limits on held-out data" in res.output
    assert "top-1 agreement with the original (logits) at least 0.98" in res.output
    assert "beyond the split" in res.output and "shifted one pixel" in res.output
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["evaluation"]["within_budget"] and all(
        c["ok"] for c in report["evaluation"]["checks"])
    manifest = json.loads((Path(report["artifact"]) / "manifest.json").read_text())
    assert manifest["recipe"]["passes"][0]["pass"] == "quantize"
    assert manifest["measurements"]["accuracy"]["top1"] >= (
        perception_kit.quality["perception"]["top1"] - 0.005)
    assert manifest["measurements"]["performance"]["speedup"] > 0
    inspect = CliRunner().invoke(app, ["inspect", report["artifact"], "--quant"])
    assert inspect.exit_code == 0 and "symmetric" in inspect.output
    assert "Q(x) = round((x - x_min)" in inspect.output


@pytest.mark.slow
def test_naive_static_collapse_is_detected_and_refused(intent_kit: Kit) -> None:
    """ONNX Runtime's defaults (int8 activations, every op) wreck MiniLM; rtinfer must see it
    and refuse to ship it. With no layer allowed in float (``max_fallback=0``) the per-layer
    ranking is skipped: it would go unused (the fallback itself is tested on its own below)."""
    val = intent_kit.split("validation")
    naive = Quantize(activation_type="int8", op_types="all", calib_samples=64)
    result = quantize_within_budget(
        rtinfer.import_model(intent_kit.model_path), naive,
        intent_kit.split("calibration").inputs, val.inputs, Budget.parse("1pt", "accuracy"),
        targets=val.targets, metric=kit_metric(intent_kit), max_fallback=0,
        try_calibrations=False)  # the calibration search is tested elsewhere
    (first,) = result.steps
    assert first["what"] == "everything quantized" and first["drop"] > 0.05  # the collapse
    assert result.status == "over_budget" and result.model is None
    assert result.sensitivity == [] and not result.kept_in_float
    assert result.evaluation is not None and result.evaluation.drop > 0.05


@pytest.mark.slow
def test_worst_sentence_budget_is_met_by_run_time_activation_quantization(
        intent_kit: Kit) -> None:
    """The issue's bar on MiniLM: every held-out sentence keeps its embedding within cosine
    0.99 of float. Static int8 misses it; run-time activation quantization meets it without
    keeping any layer in float, and the held-out figures hold on the engine that runs it."""
    val = intent_kit.split("validation")
    result = quantize_within_budget(
        rtinfer.import_model(intent_kit.model_path), Quantize(compute_inputs_only=True),
        intent_kit.split("calibration").inputs, val.inputs,
        Budget.parse("1pt", "sentence_embedding.cosine"), targets=val.targets,
        metric=kit_metric(intent_kit), try_calibrations=False, try_dynamic=True)
    assert result.steps[0]["within_budget"] is False  # static int8's worst sentence < 0.99
    assert result.status == "ok" and result.model is not None and not result.kept_in_float
    assert (result.config.method, result.config.engine) == ("dynamic", "openvino")
    test = intent_kit.split("test")
    with rtinfer.load(intent_kit.model_path, "openvino", threads=2) as f, \
            rtinfer.load(result.model, "openvino", threads=2) as q:
        f_out, q_out = run_batches(f, test.inputs), run_batches(q, test.inputs)
    assert fidelity(f_out, q_out)["sentence_embedding"]["cosine_min"] >= 0.99
    assert intent_kit.evaluate(q_out)["accuracy"] >= intent_kit.evaluate(f_out)["accuracy"] - 0.005
