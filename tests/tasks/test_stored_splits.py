"""One .npz that stores every split (``split = "stored"``, the kits' layout), and the torch
entry point's ``outputs`` / ``dynamic_axes``: read as written, and mistakes named early."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from rtinfer import tasks
from rtinfer.errors import TaskError
from rtinfer.tasks.data import read_stored_splits
from rtinfer.tasks.spec import read_task

NET = '''
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 2))
'''


def _stored(folder: Path, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", 40), ("validation", 10), ("test", 10)):
        arrays[f"{split}/inputs/x"] = rng.standard_normal((n, 4)).astype(np.float32)
        arrays[f"{split}/targets"] = np.arange(n) % 2
    np.savez(folder / "data.npz", **{**arrays, **extra})  # type: ignore[arg-type]
    return folder / "data.npz"


def _task(folder: Path, model: str = 'torch = "two_way:build"', data: str = "") -> Path:
    (folder / "two_way.py").write_text(NET)
    (folder / "task.toml").write_text(textwrap.dedent('''
        [model]
        {model}

        [data]
        path = "data.npz"
        split = "stored"
        label = "targets"
        inputs = {{ input = ["inputs/x"] }}
        {data}
    ''').format(model=model, data=data))
    return folder / "task.toml"


def test_an_npz_stores_its_splits_as_split_slash_name(tmp_path: Path) -> None:
    tables = read_stored_splits(_stored(tmp_path))
    assert list(tables) == ["train", "validation", "test"]  # the task's split order
    assert sorted(tables["test"]) == ["inputs/x", "targets"]
    assert tables["test"]["inputs/x"].shape == (10, 4)


def test_stored_splits_refuse_arrays_outside_a_split(tmp_path: Path) -> None:
    npz = _stored(tmp_path, mean=np.zeros(4))
    with pytest.raises(TaskError, match=r"data\.npz: data\.split = \"stored\" reads arrays "
                                        r"named <split>/<name>.*\['mean'\] are not"):
        read_stored_splits(npz)


def test_stored_splits_need_validation_and_test(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray] = {"train/x": np.zeros(3), "validation/x": np.zeros(2)}
    np.savez(tmp_path / "data.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match=r"no 'test/\.\.\.' arrays"):
        read_stored_splits(tmp_path / "data.npz")


def test_stored_splits_come_from_an_npz(tmp_path: Path) -> None:
    (tmp_path / "all.csv").write_text("x,label\n1,0\n2,1\n")
    (tmp_path / "t.toml").write_text('[model]\ntorch = "m:f"\n[data]\npath = "all.csv"\n'
                                     'split = "stored"\n')
    with pytest.raises(TaskError, match=r"t\.toml: data\.split: 'stored' splits are read "
                                        r"from an \.npz"):
        read_task(tmp_path / "t.toml")


def test_overlapping_stored_splits_name_both(tmp_path: Path) -> None:
    npz = _stored(tmp_path)
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test/inputs/x"][3] = arrays["train/inputs/x"][7]
    arrays["test/targets"][3] = arrays["train/targets"][7]
    np.savez(npz, **arrays)
    with pytest.raises(TaskError, match=r"data\.npz \(test/\.\.\.\): 1 row\(s\) of the test "
                                        r"split also appear in the train split"):
        tasks.load(_task(tmp_path))


@pytest.mark.parametrize(("model", "message"), [
    ('onnx = "data.npz"\noutputs = ["y"]', r"model\.outputs: outputs belong to a torch entry "
                                           r"point \(model\.torch\), not to model\.onnx"),
    ('torch = "two_way:build"\noutputs = "y"', r"model\.outputs: must list distinct output "
                                               r"names"),
    ('torch = "two_way:build"\ndynamic_axes = { input = { 0 = "n" } }',
     r"model\.dynamic_axes\.input: 0 = 'n': give an axis >= 1 \(axis 0 is always the batch\)"),
])
def test_bad_model_fields_fail_naming_the_field(tmp_path: Path, model: str,
                                                message: str) -> None:
    _stored(tmp_path)
    with pytest.raises(TaskError, match=message):
        read_task(_task(tmp_path, model))


def test_output_names_that_do_not_fit_the_module(tmp_path: Path) -> None:
    _stored(tmp_path)
    task = _task(tmp_path, 'torch = "two_way:build"\noutputs = ["logits", "extra"]')
    with pytest.raises(TaskError, match=r"task\.toml: model\.outputs: output_names has 2 "
                                        r"names but the module returns 1"):
        tasks.load(task)  # (the kits' task files name theirs: tests/kits/test_task_file.py)
