"""``rtinfer demo``: build → optimize → serve on loopback → load → summary, end to end —
run from the wheel users install, not from the source tree."""

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

from rtinfer.demo import run_demo
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
def test_demo_runs_from_the_installed_wheel(fraud_kit: Any, tmp_path: Path) -> None:
    venv = _wheel_venv(tmp_path)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import rtinfer, pathlib; "
                            "p = pathlib.Path(rtinfer.__file__).parent; "
                            "print(p, (p / 'py.typed').is_file())"],
                           check=True, capture_output=True, text=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"  # the wheel, typed
    out = tmp_path / "demo.json"
    run = subprocess.run(
        [str(venv / "bin" / "rtinfer"), "demo", "--kit", "fraud", "--small", "--time-budget",
         "60s", "--requests", "30", "--out", str(tmp_path / "repo"), "--json", str(out), "-q"],
        capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    opt, served = result["optimize"], result["serving"]
    assert Path(opt["report"]).is_file()
    assert load_artifact(opt["artifact"]).name == "fraud-demo"
    assert served["requests"] == 30 and served["latency_ms"]["n"] == 30
    assert served["url"].startswith("http://127.0.0.1:")          # loopback only
    assert served["max_abs_diff_vs_in_process"] < 1e-5           # same answers over HTTP


def test_demo_names_its_kits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="demo kits are"):
        run_demo("weather", out=tmp_path)
