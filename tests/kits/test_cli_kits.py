"""`rtinfer kits list|build` and `--kit` on the measuring verbs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rtinfer.cli import app
from rtinfer.kits import Kit

runner = CliRunner()


def test_kits_list_shows_each_kit_and_whether_built(fraud_kit: Kit, tmp_path: Path) -> None:
    res = runner.invoke(app, ["kits", "list", "--json", str(tmp_path / "k.json")])
    assert res.exit_code == 0, res.output
    for name in ("fraud", "intent", "perception"):
        assert name in res.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "k.json").read_text())["kits"]}
    assert rows["fraud"]["metric"] == "pr_auc" and rows["fraud"]["objective_p99_ms"] == 10


def test_kits_build_small_prints_quality(fraud_kit: Kit) -> None:
    res = runner.invoke(app, ["kits", "build", "fraud", "--small", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "fraud-xgboost" in res.output and "pr_auc" in res.output
    assert str(fraud_kit.path) in res.output.replace("\n", "")


def test_bench_model_with_a_kit_uses_its_real_inputs(perception_as_full: Kit,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    res = runner.invoke(app, ["bench-model", "--kit", "perception", "-t", "1", "--window",
                              "0.05", "--quiet", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["model"]["inputs"] == "given"
    assert data["results"][0]["input_shapes"]["image"] == [1, 3, 32, 32]


def test_optimize_names_what_its_shape_option_cannot_measure(perception_as_full: Kit) -> None:
    """``--shape`` reaches the search, and a wrong one fails before any variant is built."""
    for shape, why in (("img=1,3,224,224", "does not take; its inputs are ['image']"),
                       ("image=1,1,224,224", "axis 1 is fixed at 3"),
                       ("image=1,3,224", "give 4 positive sizes"),
                       ("image", "--shape takes NAME=D0,D1")):
        res = runner.invoke(app, ["optimize", "--kit", "perception", "--shape", shape, "-q"])
        assert res.exit_code != 0
        assert why in str(res.exception) + res.output, shape


def test_model_and_kit_are_exclusive() -> None:
    res = runner.invoke(app, ["inspect"])
    assert res.exit_code == 2 and "either MODEL or --kit" in res.output
