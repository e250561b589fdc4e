"""TFLite's quantization under rtinfer's budget: the seed's snippet and ``rtinfer quantize
--engine litert`` make the same model; full integer and float16 are judged, measured on LiteRT
and written only within budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import rtinfer
from rtinfer.cli import app


def _quantize(model: Path, data: Path, method: str, out: Path) -> dict[str, Any]:
    report = out.parent / f"{method}.json"
    res = CliRunner().invoke(app, [
        "quantize", str(model), "--data", str(data), "--engine", "litert", "--method", method,
        "--max-drop", "1pt", "--out", str(out), "--name", f"digits-{method}",
        "--json", str(report), "--quiet"])
    assert res.exit_code == 0, res.output
    shown = "float16" if method == "float16" else "int8"  # what the output calls the model
    assert f"{shown} on held-out data: accuracy" in res.output, res.output
    return dict(json.loads(report.read_text()))


def _ops(path: Path) -> list[dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    return [{"op": op["op_name"], "in": [dtypes.get(i) for i in op["inputs"] if i >= 0],
             "out": [dtypes.get(i) for i in op["outputs"]]} for op in interp._get_ops_details()]


def test_seed_snippet_and_rtinfer_make_the_same_model(digits_keras: Path, digits_npz: Path,
                                                       tmp_path: Path) -> None:
    import tensorflow as tf

    # The seed's example, as written: load the Keras model, convert with Optimize.DEFAULT.
    model = tf.keras.models.load_model(digits_keras)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite_model = converter.convert()
    with open(tmp_path / "model_quantized.tflite", "wb") as f:
        f.write(tflite_model)

    report = _quantize(digits_keras, digits_npz, "dynamic", tmp_path / "repo")
    assert report["status"] == "ok" and report["performance"]["engine"] == "litert"
    artifact = Path(report["artifact"])
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["model_file"] == "model.tflite"
    assert manifest["deployment"]["engine"] == "litert"
    with np.load(digits_npz) as z:
        x = z["pixels"]
    with rtinfer.load(tmp_path / "model_quantized.tflite", "litert", threads=1) as seed, \
            rtinfer.load(artifact, threads=1) as ours:
        assert ours.engine == "litert"
        # (The seed's converter names the output output_0; rtinfer keeps the layer's name.)
        np.testing.assert_array_equal(seed.run({"pixels": x})["output_0"],
                                      ours.run({"pixels": x})["logits"])
    # Dynamic range: the weights of the dense and conv layers are int8 now.
    assert any(op["op"] == "FULLY_CONNECTED" and "int8" in op["in"] for op in _ops(
        artifact / "model.tflite"))
    held = report["held_out"]
    assert held["original"]["accuracy"] >= 0.9
    assert held["int8"]["accuracy"] >= held["original"]["accuracy"] - 0.01


def test_full_integer_and_float16_within_budget(digits_keras: Path, digits_npz: Path,
                                                tmp_path: Path) -> None:
    full = _quantize(digits_keras, digits_npz, "static", tmp_path / "repo")
    assert full["status"] == "ok", full.get("message")
    assert full["held_out"]["int8"]["accuracy"] >= full["held_out"]["original"]["accuracy"] - 0.01
    path = Path(full["artifact"]) / "model.tflite"
    compute = [op for op in _ops(path) if op["op"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert compute and all(op["in"][0] == "int8" and op["out"] == ["int8"] for op in compute)

    half = _quantize(digits_keras, digits_npz, "float16", tmp_path / "repo")
    assert half["status"] == "ok"
    float_size = rtinfer.import_model(digits_keras).size_bytes
    size = (Path(half["artifact"]) / "model.tflite").stat().st_size
    assert size < 0.7 * float_size  # the weights are half as wide
    assert {"original", "int8"} <= set(half["performance"]["p50_ms"])


def test_over_budget_writes_nothing(digits_keras: Path, digits_npz: Path, tmp_path: Path) -> None:
    from rtinfer.optimize import Quantize
    from rtinfer.optimize.run import run_quantize

    # A budget no quantized model can meet: agreement with the original of every row.
    result = run_quantize(digits_keras, data=digits_npz, max_drop="0pt", min_agreement=1.0,
                          config=Quantize(method="static", engine="litert", calib_samples=4),
                          out=tmp_path / "repo")
    if result["status"] == "ok":
        pytest.skip("this CPU's int8 happened to agree on every row")
    assert "artifact" not in result and not (tmp_path / "repo").exists()


def test_litert_quantization_needs_a_tensorflow_form(cnn: Any) -> None:
    from rtinfer.errors import ExportError
    from rtinfer.optimize import Quantize
    from rtinfer.optimize.passes.quantize import quantize

    with pytest.raises(ExportError, match="has no TensorFlow form"):
        quantize(cnn, Quantize(method="dynamic", engine="litert"))
    with pytest.raises(ValueError, match="float16' is TFLite's"):
        Quantize(method="float16")
