"""Recipes are replayable data: every variant ``optimize`` can choose for a task rebuilds from
its recipe alone, and ``rtinfer replay`` checks a written version.

The torch-side passes run with a time limit small enough to cut their training short, so the
recipe must record how far they got (``stopped_at``) for the rebuild to be the same model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rtinfer import tasks
from rtinfer.cli import app
from rtinfer.engines import available_engines, load
from rtinfer.optimize.budgeted import quantizable_nodes
from rtinfer.optimize.evaluate import fidelity, run_batches
from rtinfer.optimize.passes import Recipe
from rtinfer.optimize.passes.distill import Distill
from rtinfer.optimize.passes.prune import Prune
from rtinfer.optimize.passes.quantize import Quantize, quantize
from rtinfer.optimize.replay import TOLERANCE, rebuild
from rtinfer.optimize.variants import Variant, quantized_variants, torch_variants

runner = CliRunner()


def _outputs(model: Any, engine: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with load(model, engine, 1, warmup=False) as s:
        return run_batches(s, inputs)


@pytest.mark.slow
def test_every_recipe_optimize_can_choose_rebuilds_an_equal_model(digits: Path) -> None:
    task = tasks.load(digits)
    original = task.original_model()
    calibration = task.split("calibration").inputs
    test = task.split("test").inputs
    engines = available_engines()
    variants = [build() for _, _, build in quantized_variants(original, calibration,
                                                              engines=engines)]
    trained = [build() for _, _, build in torch_variants(task, original, seconds=0.1,
                                                        progress=lambda _m: None)]
    assert {v.id for v in trained} == {"distilled", "pruned"}
    for parent in trained:  # a trained model then quantized (one method each: the others
        # are the same quantize pass, replayed above on the original)
        variants += [build() for vid, _, build in quantized_variants(
            parent.model, calibration, prefix=f"{parent.id}+", parent=parent.id,
            base_recipe=parent.recipe, engines=engines) if vid.endswith("+int8-static")]
    # Mixed precision: a static setting with a layer kept in float, as the search records it.
    mixed = Quantize(exclude=(quantizable_nodes(original, Quantize())[-1],))
    variants.append(Variant("int8-mixed", "mixed", [mixed.to_dict()],
                            quantize(original, mixed, calibration), True))
    variants += trained
    cut = [p for v in trained for p in Recipe.of(v.recipe).passes
           if isinstance(p, Prune | Distill)]
    # A tenth of a second for both: the training was cut short, and the recipe says where.
    assert all(p.max_seconds is None for p in cut) and any(p.stopped_at for p in cut)

    for v in variants:
        recipe = Recipe.from_json(Recipe.of(v.recipe).to_json())  # through versioned JSON
        assert recipe.to_dict()["passes"] == v.recipe
        rebuilt = rebuild(recipe, task)
        engine = v.runtime
        agree = fidelity(_outputs(v.model, engine, test), _outputs(rebuilt, engine, test))
        for row in agree.values():
            assert all(row[k] >= t for k, t in TOLERANCE.items()), (v.id, row)
        if not any(isinstance(p, Prune | Distill) for p in recipe.passes):
            # Deterministic passes on the original: the same file, byte for byte.
            assert Path(rebuilt.path).read_bytes() == Path(v.model.path).read_bytes(), v.id


def test_replay_checks_a_written_version_and_refuses_a_tampered_recipe(
        digits: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    res = runner.invoke(app, ["quantize", str(digits), "--out", str(repo), "--name", "d",
                              "--max-drop", "5pt", "--min-agreement", "0.9", "-q"])
    assert res.exit_code == 0, res.output
    # Version 1 keeps the original the int8 version 2 was judged against (its reference).
    version = repo / "d" / "2"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["task"]["fingerprint"] == tasks.load(digits).fingerprint
    assert [p["pass"] for p in manifest["recipe"]["passes"]] == ["quantize"]
    original = json.loads((repo / "d" / "1" / "manifest.json").read_text())
    assert manifest["reference"] == {"version": 1, "sha256": original["files"][
        original["model_file"]]["sha256"]}
    assert original["recipe"]["passes"] == [] and "reference" not in original
    # Written again, the same original is found rather than copied a second time.
    res = runner.invoke(app, ["quantize", str(digits), "--out", str(repo), "--name", "d",
                              "--max-drop", "5pt", "--min-agreement", "0.9", "-q"])
    assert res.exit_code == 0, res.output
    again = json.loads((repo / "d" / "3" / "manifest.json").read_text())
    assert again["reference"]["version"] == 1 and not (repo / "d" / "4").exists()

    res = runner.invoke(app, ["replay", str(version), "--task", str(digits), "-q",
                              "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["same_hash"] and report["equal"]

    # Another calibration in the recipe: a different model, and replay says so.
    manifest["recipe"]["passes"][0]["calib_samples"] = 3
    (version / "manifest.json").write_text(json.dumps(manifest))
    res = runner.invoke(app, ["replay", str(version), "--task", str(digits), "-q"])
    assert res.exit_code == 1 and "differs" in res.output

    # A recipe from a newer rtinfer, or naming an unknown pass, is refused with the reason.
    manifest["recipe"]["format_version"] = 99
    (version / "manifest.json").write_text(json.dumps(manifest))
    res = runner.invoke(app, ["replay", str(version), "--task", str(digits), "-q"])
    assert res.exit_code != 0 and "newer" in str(res.exception or res.output)
    with pytest.raises(ValueError, match="unknown pass 'sparsify'"):
        Recipe.from_dict({"format_version": 1, "passes": [{"pass": "sparsify"}]})
