"""``optimize``: candidates measured, the budget honoured, the choice written and reported."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtinfer.cli.optimize import parse_duration
from rtinfer.deploy.artifact import load_artifact
from rtinfer.optimize.report import render_html
from rtinfer.optimize.search import optimize


@pytest.fixture(scope="module")
def fraud_run(fraud_kit: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    repo = tmp_path_factory.mktemp("repo")
    return optimize(kit=fraud_kit, max_drop="1pt", time_budget_s=600, out=repo,
                    engines=["onnxruntime", "openvino"], window_s=0.2)


def test_candidates_span_precisions_and_engines(fraud_run: dict[str, Any]) -> None:
    ids = {r["id"] for r in fraud_run["candidates"]}
    assert {"fp32@onnxruntime", "fp32@openvino"} <= ids
    variants = {r["variant"] for r in fraud_run["candidates"]}
    assert {"fp32", "int8-dynamic", "int8-static", "int8-nncf"} <= variants
    for r in fraud_run["candidates"]:
        assert r["validation"]["fidelity"], r["id"]
        if r["validation"]["within_budget"]:
            assert r["quick"].get("p50_ms", 0) > 0, r["id"]     # measured, not guessed
        if "int8" in r["variant"] or "bf16" in r["variant"]:
            assert r["recipe"][-1]["pass"] == "quantize"
        elif r["variant"] != "fp32":  # the MLP's smaller float forms
            assert r["recipe"][-1]["pass"] in ("prune", "distill")


def test_never_chooses_over_budget_and_explains(fraud_run: dict[str, Any]) -> None:
    chosen = next(r for r in fraud_run["candidates"] if r["chosen"])
    assert chosen["variant"] == "fp32" or chosen["validation"]["within_budget"]
    assert chosen["validation"]["drop"] <= 0.01 + 1e-12
    assert fraud_run["chosen"]["why"]
    if chosen["variant"] == "fp32":  # nothing beat it: the report says so
        assert "no optimized variant" in fraud_run["chosen"]["why"]
    # the held-out test split is evaluated for both and reported
    held = fraud_run["held_out"]
    assert set(held["original"]) == set(held["chosen"]) >= {"pr_auc"}
    assert held["fidelity"]


def test_every_declared_metric_and_the_guards_are_limits(fraud_run: dict[str, Any]) -> None:
    limits = [lim["metric"] for lim in fraud_run["budget"]["limits"]]
    assert limits == ["roc_auc", "pr_auc", "recall_at_1pct_fpr", "probabilities.top1",
                      "class_recall"]
    for r in fraud_run["candidates"]:
        checks = r["validation"]["checks"]
        assert [c["metric"] for c in checks] == limits, r["id"]
        assert r["validation"]["within_budget"] == all(c["ok"] for c in checks)
        assert r["validation"]["excluded_by"] == [c["metric"] for c in checks if not c["ok"]]
    # The same limits on the held-out split, and the kit's drifted traffic, reported.
    held = fraud_run["held_out"]
    assert [c["metric"] for c in held["budget"]["checks"]] == limits
    beyond = held["beyond_split"]
    assert beyond["samples"] == 20_000 and set(beyond["original"]) == set(held["original"])
    html = Path(fraud_run["report"]).read_text()
    assert "limits broken" in html and "Beyond the split" in html


def test_pareto_front_is_non_dominated(fraud_run: dict[str, Any]) -> None:
    rows = {r["id"]: r for r in fraud_run["candidates"] if "p50_ms" in r["quick"]}
    front = fraud_run["pareto"]
    assert front and set(front) <= set(rows)
    for a in front:
        pa, da = rows[a]["quick"]["p50_ms"], rows[a]["validation"]["drop"]
        for b, r in rows.items():
            pb, db = r["quick"]["p50_ms"], r["validation"]["drop"]
            assert not (pb <= pa and db <= da and (pb < pa or db < da)), (a, b)


def test_the_chosen_version_replays_from_its_kit(fraud_run: dict[str, Any],
                                                tmp_path: Path) -> None:
    """The manifest records the kit and its size; ``rtinfer replay --kit`` rebuilds the
    chosen model from the small build it was made from."""
    from typer.testing import CliRunner

    from rtinfer.cli import app

    manifest = load_artifact(fraud_run["artifact"]).manifest
    assert (manifest["task"]["name"], manifest["task"]["size"]) == ("fraud", "small")
    res = CliRunner().invoke(app, ["replay", fraud_run["artifact"], "--kit", "fraud", "-q",
                                   "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["equal"] and "warning" not in report


def test_writes_artifact_report_and_json(fraud_run: dict[str, Any]) -> None:
    art = load_artifact(fraud_run["artifact"])
    assert art.manifest["deployment"]["engine"] == fraud_run["chosen"]["engine"]
    assert art.manifest["recipe"]["passes"] == next(
        r["recipe"] for r in fraud_run["candidates"] if r["chosen"])
    settings = json.loads((Path(fraud_run["artifact"]).parent / "rtinfer.json").read_text())
    # Serve runs each version on its manifest's engine: no folder-wide engine overrides it.
    assert "engine" not in settings and "threads" not in settings
    assert (settings["kit"], settings["kit_size"]) == ("fraud", "small")  # raw inputs served
    saved = json.loads((Path(fraud_run["artifact"]).parent / "optimize.json").read_text())
    assert saved["chosen"]["id"] == fraud_run["chosen"]["id"]
    html = Path(fraud_run["report"]).read_text()
    assert html.count("<svg") == 2 and "http" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")              # self-contained: no fetches
    for r in fraud_run["candidates"]:
        assert r["id"] in html
    for svg in html.split("<svg")[1:]:
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")   # well-formed
    assert "budget floor" in html and "Pareto front" in html


def test_resume_reuses_finished_variants(fraud_kit: Any, fraud_run: dict[str, Any],
                                         tmp_path: Path) -> None:
    again = optimize(kit=fraud_kit, max_drop="1pt", time_budget_s=600,
                     engines=["onnxruntime", "openvino"], window_s=0.2)
    assert set(again["resumed_variants"]) >= {"fp32", "int8-static"}
    before = {r["id"]: r["validation"]["drop"] for r in fraud_run["candidates"]}
    after = {r["id"]: r["validation"]["drop"] for r in again["candidates"]}
    assert before == after


def test_time_budget_is_honoured(fraud_kit: Any) -> None:
    import rtinfer

    result = rtinfer.optimize(kit=fraud_kit, max_drop="1pt", time_budget_s=0.001,
                              engines=["onnxruntime"], window_s=0.1, resume=False)
    assert {s["why"] for s in result["skipped"]} == {"time budget"}
    assert {s["variant"] for s in result["skipped"]} >= {"int8-dynamic", "int8-static"}
    assert result["chosen"]["variant"] == "fp32"        # the original, measured regardless


def test_onnx_file_without_labels_budgets_fidelity(cnn: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    name = cnn.spec.input_names[0]
    np.savez(tmp_path / "data.npz", **{name: rng.standard_normal((64, 3, 32, 32),
                                                                  dtype=np.float32)})
    result = optimize(cnn.path, data=tmp_path / "data.npz", max_drop="1%",
                      time_budget_s=300, engines=["onnxruntime"], window_s=0.1)
    assert result["budget"]["metric"].endswith(".cosine")
    for r in result["candidates"]:
        fid = r["validation"]["fidelity"]["logits"]
        # 1% of the worst cosine, and the default guard: top-1 agreement of at least 0.98.
        assert r["validation"]["within_budget"] == (
            fid["cosine_min"] >= 0.99 - 1e-12 and fid["top1_agreement"] >= 0.98), r["id"]
    assert "original" not in result["held_out"]   # no labels: fidelity only


def test_latency_is_measured_at_the_deployment_shape(cnn_module: Any, cnn: Any,
                                                     tmp_path: Path) -> None:
    import torch

    import rtinfer

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", image=rng.standard_normal((64, 3, 32, 32),
                                                              dtype=np.float32))
    with pytest.raises(ValueError, match=r"input image is \['batch', 3, 32, 32\]: axis 2 is "
                       r"fixed at 32, axis 3 is fixed at 32"):
        optimize(cnn.path, data=tmp_path / "data.npz", shapes={"image": (1, 3, 96, 96)})
    anysize = rtinfer.import_model(cnn_module, (torch.zeros(2, 3, 32, 32),),
                                   input_names=["image"], output_names=["logits"],
                                   dynamic_axes={"image": {2: "height", 3: "width"}},
                                   out_dir=tmp_path / "anysize")
    result = optimize(anysize.path, data=tmp_path / "data.npz", max_drop="1%",
                      time_budget_s=300, engines=["onnxruntime"], window_s=0.1,
                      shapes={"image": (1, 3, 96, 96)}, resume=False)
    inputs = result["measurement"]["inputs"]
    assert inputs["shapes"] == ["image[1, 3, 96, 96]"] and "resized" in inputs["what"]
    assert result["chosen"]["latency_ms"]["p50"] > 0


def test_nncf_is_retried_without_bias_correction_only_when_its_default_is_refused(
        cnn: Any) -> None:
    from rtinfer.optimize.variants import quantized_variants

    calibration = {"image": np.zeros((4, 3, 32, 32), np.float32)}
    asked: list[str] = []

    def ids(refuse: bool) -> list[str]:
        def refused(vid: str) -> bool:
            asked.append(vid)
            return refuse
        return [vid for vid, _, _ in quantized_variants(
            cnn, calibration, prefix="pruned+", engines=["onnxruntime", "openvino"],
            refused=refused)]

    assert "pruned+int8-nncf-nobc" not in ids(False)
    retried = ids(True)
    assert retried.index("pruned+int8-nncf-nobc") == retried.index("pruned+int8-nncf") + 1
    assert set(asked) == {"pruned+int8-nncf"}   # asked about the default, after it was judged
    assert "int8-nncf-nobc" not in [v for v, _, _ in quantized_variants(
        cnn, calibration, engines=["onnxruntime"], refused=lambda _v: True)]  # no OpenVINO


def test_bad_arguments_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="goal must be one of"):
        optimize(kit="fraud", max_drop="1pt", goal="fast")
    with pytest.raises(ValueError, match="must say absolute or relative"):
        optimize(kit="fraud", max_drop="1")
    assert parse_duration("15m") == 900 and parse_duration("90s") == 90
    with pytest.raises(Exception, match="give e.g. 90s"):
        parse_duration("soon")


def test_report_refuses_other_results() -> None:
    with pytest.raises(ValueError, match="not an optimize result"):
        render_html({"kind": "bench"})


def test_rtinfer_report_renders_a_saved_search(fraud_run: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rtinfer.cli import app

    saved = Path(fraud_run["artifact"]).parent / "optimize.json"
    res = CliRunner().invoke(app, ["report", str(saved), "--html", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert fraud_run["chosen"]["id"] in (tmp_path / "r.html").read_text()
