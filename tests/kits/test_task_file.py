"""`rtinfer kits show`: a kit as a task file that, loaded as a user's task is, gives the kit
back: its splits, classes, metrics, objective and its model in torch form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import rtinfer
from rtinfer import tasks
from rtinfer.cli import app
from rtinfer.engines.base import run_in_batches
from rtinfer.errors import KitNotBuiltError
from rtinfer.kits import Kit

runner = CliRunner()


def _shown(name: str, folder: Path) -> Path:
    res = runner.invoke(app, ["kits", "show", name, "--size", "small"])
    assert res.exit_code == 0, res.output
    path = folder / f"{name}.toml"
    path.write_text(res.stdout)
    return path


@pytest.fixture(scope="module", params=["fraud", "perception"])
def kit_and_task(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Kit, tasks.Task]:
    kit = request.getfixturevalue(f"{request.param}_kit")
    return kit, tasks.load(_shown(request.param, tmp_path_factory.mktemp("shown")))


def test_the_task_has_the_kits_splits(kit_and_task: tuple[Kit, tasks.Task]) -> None:
    kit, task = kit_and_task
    assert task.split_names == kit.split_names
    for name in kit.split_names:
        ours, theirs = task.split(name), kit.split(name)
        assert ours.inputs.keys() == theirs.inputs.keys()
        for key, value in theirs.inputs.items():
            assert ours.inputs[key].dtype == value.dtype
            assert np.array_equal(ours.inputs[key], value)
        assert np.array_equal(ours.targets, theirs.targets)


def test_the_task_scores_like_the_kit(kit_and_task: tuple[Kit, tasks.Task]) -> None:
    kit, task = kit_and_task
    assert (task.labels, task.metric, task.objective_p99_ms) == (
        kit.labels, kit.metric, kit.objective_p99_ms)
    test = kit.split("test").inputs
    with rtinfer.load(kit.model_path, "onnxruntime", 1) as session:
        kit_outputs = run_in_batches(session, test, 256)
    assert task.evaluate(kit_outputs) == kit.evaluate(kit_outputs)  # every declared metric
    # The task's own model, exported from the entry point and the kit's weights.
    with rtinfer.load(task.original_model(), "onnxruntime", 1) as session:
        task_outputs = run_in_batches(session, test, 256)
    for name, value in kit_outputs.items():
        np.testing.assert_allclose(task_outputs[name], value, atol=1e-5)
    assert task.evaluate(task_outputs) == pytest.approx(kit.evaluate(kit_outputs), abs=1e-3)


def test_the_task_model_is_the_kits_torch_form(kit_and_task: tuple[Kit, tasks.Task]) -> None:
    kit, task = kit_and_task
    assert task.spec is not None
    manifest = json.loads((kit.model_path / "manifest.json").read_text())
    assert task.spec.model.kind == "torch"
    assert task.spec.model.entry == manifest["torch"]["factory"]
    assert task.spec.model.weights == kit.model_path / manifest["torch"]["weights"]
    model = task.original_model()
    assert model.spec == kit.original_model().spec  # names, dtypes, dynamic axes
    assert model.torch_module is not None
    assert task.techniques_skipped == {}  # pruning and distillation can run on it


def test_kits_show_prints_a_readable_task_file(fraud_kit: Kit) -> None:
    res = runner.invoke(app, ["kits", "show", "fraud", "--size", "small"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert 'metric = "rtinfer.kits.fraud:pr_auc"' in lines
    assert 'torch = "rtinfer.kits.fraud:mlp"' in lines
    assert 'outputs = ["probabilities"]' in lines
    assert 'split = "stored"' in res.stdout
    assert f'path = "{fraud_kit.path / "data.npz"}"' in lines
    assert any(line.startswith("# fraud-xgboost: onnx = ") for line in lines)  # the other one


def test_kits_show_a_kit_not_built_says_how_to_build_it(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTINFER_CACHE", str(tmp_path))
    res = runner.invoke(app, ["kits", "show", "perception", "--size", "small"])
    assert isinstance(res.exception, KitNotBuiltError)
    assert "rtinfer kits build perception --small" in str(res.exception)
    res = runner.invoke(app, ["kits", "show", "perception", "--size", "medium"])
    assert res.exit_code == 2 and "--size is one of" in res.output


def test_inspect_a_kit_counts_flops_at_its_image_size(perception_as_full: Kit,
                                                      tmp_path: Path) -> None:
    from rtinfer.models.summary import count_flops

    res = runner.invoke(app, ["inspect", "--kit", "perception", "--json", str(tmp_path / "i.json")])
    assert res.exit_code == 0, res.output
    flops: dict[str, Any] = json.loads((tmp_path / "i.json").read_text())["flops"]
    assert flops["input_shapes"] == {"image": [1, 3, 32, 32]}  # the data's, not (1, 3, 1, 1)
    assert "kit's test rows" in flops["counted_at"]
    model = perception_as_full.original_model()
    assert flops["per_sample"] == count_flops(model, {"height": 32, "width": 32})["per_sample"]
    assert flops["per_sample"] > 4 * count_flops(model)["per_sample"]  # vs free dims = 1


@pytest.mark.slow
def test_the_intent_kit_as_a_task(intent_kit: Kit, tmp_path: Path) -> None:
    """The small build as a task file: the same splits, metric and model. (The loader
    refuses held-out rows that also occur in training; since kit version 4 no intent build
    has any.)"""
    task = tasks.load(_shown("intent", tmp_path))
    for name in intent_kit.split_names:
        for key, value in intent_kit.split(name).inputs.items():
            assert np.array_equal(task.split(name).inputs[key], value)
    test = intent_kit.split("test").inputs
    with rtinfer.load(intent_kit.model_path, "onnxruntime", 1) as session:
        outputs = run_in_batches(session, test, 256)
    assert task.evaluate(outputs) == intent_kit.evaluate(outputs)
    assert task.original_model().spec == intent_kit.original_model().spec
