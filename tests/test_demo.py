"""``rtinfer demo``: build → optimize → serve on loopback → load → summary, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rtinfer.artifact import load_artifact
from rtinfer.demo import run_demo


@pytest.mark.slow
def test_demo_optimizes_serves_and_checks_answers(fraud_kit: Any, tmp_path: Path) -> None:
    result = run_demo("fraud", out=tmp_path / "repo", size="small", time_budget_s=60,
                      requests=30)
    opt, served = result["optimize"], result["serving"]
    assert Path(opt["report"]).is_file()
    assert load_artifact(opt["artifact"]).name == "fraud-demo"
    assert served["requests"] == 30 and served["latency_ms"]["n"] == 30
    assert served["url"].startswith("http://127.0.0.1:")          # loopback only
    assert served["max_abs_diff_vs_in_process"] < 1e-5           # same answers over HTTP


def test_demo_names_its_kits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="demo kits are"):
        run_demo("weather", out=tmp_path)
