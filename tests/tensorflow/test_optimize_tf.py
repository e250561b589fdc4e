"""``rtinfer optimize`` on a Keras model: LiteRT's variants compete in the same table as ONNX
Runtime's and OpenVINO's, judged by the same budget, and the choice is written deployable."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import rtinfer
from rtinfer.optimize.search import optimize


def test_litert_variants_compete_with_the_onnx_engines(digits_keras: Path, digits_npz: Path,
                                                       tmp_path: Path) -> None:
    # OpenVINO left out to keep the test short (its NNCF variants are the slowest to build);
    # the benchmark measures all three engines.
    result = optimize(digits_keras, data=digits_npz, max_drop="1pt", time_budget_s=300,
                      window_s=0.1, out=tmp_path / "repo", engines=["onnxruntime", "litert"])
    assert Path(result["artifact"]).parent.name == "digits"  # the file's name, not the cache's
    ids = {r["id"] for r in result["candidates"]}
    assert {"fp32@onnxruntime", "litert-fp32@litert", "litert-dynamic@litert",
            "litert-int8@litert", "litert-fp16@litert"} <= ids, ids
    assert "fp32@litert" not in ids  # the float model on LiteRT is judged as its own variant
    assert "int8-static@onnxruntime" in ids
    for r in result["candidates"]:  # a .tflite variant is timed on LiteRT only
        if r["variant"].startswith("litert-"):
            assert r["engine"] == "litert" and r["validation"]["evaluated_on"] == "litert"
            assert r["recipe"][-1]["engine"] == "litert"
    chosen = next(r for r in result["candidates"] if r["chosen"])
    assert chosen["variant"] == "fp32" or chosen["validation"]["within_budget"]
    held = result["held_out"]
    assert held["chosen"]["accuracy"] >= held["original"]["accuracy"] - 0.01
    # The written version runs where it was chosen, answering as the choice did.
    with np.load(digits_npz) as z:
        x = z["pixels"][:16]
    with rtinfer.load(result["artifact"], threads=1) as s:
        assert s.engine == result["chosen"]["engine"]
        assert s.run({"pixels": x})["logits"].shape == (16, 10)
    if result["chosen"]["engine"] == "litert":
        assert (Path(result["artifact"]) / "model.tflite").is_file()
