"""``rtinfer demo``: build → optimize → serve on loopback → load → summary, end to end —
run from the wheel users install, not from the source tree — and its before/after summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from rtinfer.demo import BeforeAfter, run_demo
from rtinfer.deploy.artifact import load_artifact

ROOT = Path(__file__).resolve().parent.parent


def _wheel_venv(tmp: Path) -> Path:
    """A fresh venv with rtinfer installed from a wheel built here (not editable); the
    dependencies come from this environment's site-packages, so nothing is downloaded."""
    dist, tree = tmp / "dist", tmp / "tree"
    tree.mkdir()  # a copy of what the wheel is made of: never a stale build/ of the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                    "--wheel-dir", str(dist), str(tree)], check=True)
    wheel = next(dist.glob("rtinfer-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    # A path listed in a .pth is not itself a site dir: this environment's editable-install
    # hook is not run, so `import rtinfer` finds the wheel's copy.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(perception_kit: Any, tmp_path: Path) -> None:
    venv = _wheel_venv(tmp_path)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import rtinfer, pathlib; "
                            "p = pathlib.Path(rtinfer.__file__).parent; "
                            "print(p, (p / 'py.typed').is_file())"],
                           check=True, capture_output=True, text=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"  # the wheel, typed
    out = tmp_path / "demo.json"
    run = subprocess.run(  # the default kit, as `make demo` runs it, at its reduced size
        [str(venv / "bin" / "rtinfer"), "demo", "--small", "--time-budget", "60s",
         "--requests", "30", "--out", str(tmp_path / "repo"), "--json", str(out), "-q"],
        capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    opt, served = result["optimize"], result["serving"]
    assert result["kit"] == "perception"
    assert Path(opt["report"]).is_file()
    assert load_artifact(opt["artifact"]).name == "perception-demo"
    assert served["requests"] == 30 and served["latency_ms"]["n"] == 30
    assert served["url"].startswith("http://127.0.0.1:")          # loopback only
    assert served["max_abs_diff_vs_in_process"] < 1e-5           # same answers over HTTP
    # The summary ends on the answer: the original against what the search chose.
    ba = result["before_after"]
    assert ba["candidates"] == [f"fp32@{opt['original_engine']}", opt["chosen"]["id"]]
    assert ba["metric"] == "top1" and ba["metric_values"] is not None
    tail = run.stdout[run.stdout.index("before → after"):]
    for line in ("candidate", "p50 ms at batch 1", "speedup", "top1 (held-out test)",
                 "size MiB", "engine", opt["chosen"]["id"]):
        assert line in tail


def _result(chosen: str, speedups: dict[str, float]) -> dict[str, Any]:
    """The parts of an optimize result the before/after reads: the original on two engines,
    an int8 variant, the final rounds' speedups against the original on ONNX Runtime."""
    def row(cid: str, size: int) -> dict[str, Any]:
        return {"id": cid, "engine": cid.split("@")[1], "size_bytes": size,
                "final": {"latency_ms": {"p50": 0.2 / speedups[cid]},
                          "speedup_vs_original_ort": speedups[cid]}}

    return {"batch": 1, "threads": 2, "model": {"size_bytes": 4 * 2**20},
            "budget": {"metric": "top1"},
            "candidates": [row("fp32@onnxruntime", 4 * 2**20), row("fp32@openvino", 4 * 2**20),
                           row("int8-static@onnxruntime", 2**20)],
            "chosen": {"id": chosen, "original_engine": "openvino", "why": "because"},
            "held_out": {"original": {"top1": 0.99}, "chosen": {"top1": 0.985}}}


def test_before_after_against_the_original_on_its_fastest_engine() -> None:
    ba = BeforeAfter.of(_result("int8-static@onnxruntime", {
        "fp32@onnxruntime": 1.0, "fp32@openvino": 1.25, "int8-static@onnxruntime": 2.5}))
    assert ba.candidates == ("fp32@openvino", "int8-static@onnxruntime")
    assert ba.speedup == pytest.approx(2.0)  # 2.5x ORT's original is 2x OpenVINO's
    assert ba.rows() == [
        ("candidate", "fp32@openvino", "int8-static@onnxruntime"),
        ("p50 ms at batch 1", "0.160", "0.080"), ("speedup", "1.00x", "2.00x"),
        ("top1 (held-out test)", "0.9900", "0.9850"), ("size MiB", "4.00", "1.00"),
        ("engine", "openvino", "onnxruntime")]
    assert json.loads(json.dumps(ba.to_dict()))["speedup"] == pytest.approx(2.0)


def test_before_after_when_the_original_is_the_answer() -> None:
    result = _result("fp32@openvino", {"fp32@onnxruntime": 1.0, "fp32@openvino": 1.25,
                                       "int8-static@onnxruntime": 1.1})
    del result["held_out"]  # no labels: no metric to report
    ba = BeforeAfter.of(result)
    assert ba.candidates == ("fp32@openvino", "fp32@openvino") and ba.speedup == 1.0
    assert ("top1 (held-out test)", "-", "-") in ba.rows()
    assert ba.why == "because"


def test_demo_names_its_kits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="demo kits are"):
        run_demo("weather", out=tmp_path)
