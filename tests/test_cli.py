"""The CLI: each verb on real models, JSON output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtinfer.cli import app
from rtinfer.models import ImportedModel

runner = CliRunner()


def _rtinfer(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user would, to see main()'s error handling."""
    return subprocess.run([sys.executable, "-m", "rtinfer.cli", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_help_lists_the_verbs() -> None:
    out = runner.invoke(app, ["--help"]).output
    for verb in ("inspect", "bench-model", "advise", "compare", "optimize", "demo"):
        assert verb in out


def test_inspect_torch_cnn(cnn: ImportedModel, tmp_path: Path) -> None:
    res = runner.invoke(app, ["inspect", str(cnn.path), "--json", str(tmp_path / "i.json")])
    assert res.exit_code == 0, res.output
    assert "image  float32  (batch, 3, 32, 32)" in res.output
    assert "Conv 2" in res.output and "GFLOP" in res.output
    data = json.loads((tmp_path / "i.json").read_text())
    assert data["op_histogram"]["Conv"] == 2


def test_inspect_sklearn_model(breast_cancer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    import rtinfer

    x_train, _, y_train, _ = breast_cancer
    model = rtinfer.import_model(LogisticRegression(max_iter=500).fit(x_train, y_train),
                                 example_inputs=x_train[:16], out_dir=tmp_path)
    res = runner.invoke(app, ["inspect", str(model.path)])
    assert res.exit_code == 0, res.output
    assert "input  float32  (batch, 30)" in res.output
    assert "ai.onnx.ml" in res.output


def test_bench_model_writes_json(cnn: ImportedModel, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = runner.invoke(app, ["bench-model", str(cnn.path), "--engine", "openvino", "-t", "1",
                              "-b", "1,2", "--window", "0.05", "--quiet", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "openvino, 1 thread(s)" in res.output and "cold start" in res.output
    data = json.loads(out.read_text())
    assert [r["batch"] for r in data["results"]] == [1, 2]


def test_advise_prints_a_recommendation(cnn: ImportedModel) -> None:
    res = runner.invoke(app, ["advise", str(cnn.path), "--engines", "onnxruntime,openvino",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert "Recommendation:" in res.output and "Hardware:" in res.output


def test_unknown_engine_is_one_clear_line(cnn: ImportedModel) -> None:
    proc = _rtinfer("bench-model", str(cnn.path), "--engine", "tensorrt-llm", "--quiet")
    assert proc.returncode == 2
    assert "error: unknown engine 'tensorrt-llm'; choose one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_model_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    proc = _rtinfer("inspect", str(bad))
    assert proc.returncode == 2
    assert "bad.onnx" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_dim_option() -> None:
    res = runner.invoke(app, ["inspect", "x.onnx", "--dim", "sequence"])
    assert res.exit_code == 2
    assert "NAME=SIZE" in res.output


@pytest.mark.slow
def test_compare_engines_on_minilm(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    res = runner.invoke(app, ["compare", "--engines", "torch,onnxruntime,openvino", "--window",
                              "0.2", "--rounds", "1", "--seq-len", "32", "--quiet", "--json",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert "all-MiniLM-L6-v2" in res.output and "speedup vs torch" in res.output
    data = json.loads(out.read_text())
    assert data["baseline"] == "torch"
    assert [r["engine"] for r in data["rows"]] == ["torch", "onnxruntime", "openvino"]
    for row in data["rows"]:
        assert max(row["max_abs_diff_vs_baseline"].values()) < 1e-4
