"""The tail every job shares: what a written version and its model folder's settings say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtinfer.deploy.artifact import load_artifact
from rtinfer.deploy.settings import read_model_config
from rtinfer.errors import ConfigError
from rtinfer.models import ImportedModel
from rtinfer.optimize import pipeline
from rtinfer.optimize.passes import Recipe
from rtinfer.optimize.passes.quantize import Quantize

HELD = {"fidelity": {}, "original": {"accuracy": 0.9}, "int8": {"accuracy": 0.89}}


class _Kit:
    def __init__(self) -> None:
        self.name, self.meta = "fraud", {"size": "small", "key": "abc"}


def _write(model: ImportedModel, repo: Path, *, engine: str | None, task: Any) -> Any:
    return pipeline.write(model, repo, "m", recipe=Recipe((Quantize(),)), held=HELD,
                          label="int8", performance={}, engine=engine, threads=None,
                          task=task)


def test_each_version_keeps_its_engine_and_the_folder_only_its_preprocessing(
        cnn: ImportedModel, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "rtinfer.json").write_text(json.dumps(
        {"engine": "openvino", "threads": 7, "instances": 2}))
    first = _write(cnn, tmp_path, engine="openvino", task=_Kit())
    settings = json.loads((tmp_path / "m" / "rtinfer.json").read_text())
    # A folder-wide engine or thread count would override every version's own.
    assert settings == {"instances": 2, "kit": "fraud", "kit_size": "small"}
    second = _write(cnn, tmp_path, engine="onnxruntime", task=None)
    assert (first.engine, second.engine) == ("openvino", "onnxruntime")
    settings = json.loads((tmp_path / "m" / "rtinfer.json").read_text())
    assert settings == {"instances": 2}  # no kit's pre-processing for a kit-less model
    assert first.manifest["task"] == {"name": "fraud", "fingerprint": None, "size": "small",
                                      "key": "abc"}
    assert Recipe.from_dict(second.manifest["recipe"]).passes == (Quantize(),)
    config = read_model_config(tmp_path / "m")
    assert config.engine is None and config.instances == 2


def test_a_broken_settings_file_stops_the_write_before_a_version_exists(
        cnn: ImportedModel, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "rtinfer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="rtinfer.json is not valid JSON"):
        _write(cnn, tmp_path, engine=None, task=None)
    (tmp_path / "m" / "rtinfer.json").write_text(json.dumps({"instances": 0}))
    with pytest.raises(ConfigError, match="instances must be >= 1"):
        _write(cnn, tmp_path, engine=None, task=None)
    assert not [p for p in (tmp_path / "m").iterdir() if p.is_dir()]


def test_a_distillation_into_a_given_student_is_written_but_not_replayable(
        tmp_path: Path) -> None:
    import torch

    from rtinfer.optimize.passes.distill import Distill, distill

    def net(hidden: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(hidden, 3))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    data = {s: ({"input": x}, y) for s in ("train", "validation", "test")}
    torch.manual_seed(0)
    res = distill(net(16), Distill(student=net(4), steps=5, finetune_steps=2), data=data,
                  out=tmp_path, name="d", measure=False)
    manifest = load_artifact(res.artifact).manifest
    entry = manifest["recipe"]["passes"][0]
    assert entry["pass"] == "distill" and entry["student"].startswith("Sequential (sha256 ")
    with pytest.raises(ValueError, match="names a given teacher/student module"):
        Recipe.from_dict(manifest["recipe"])
