"""Tasks: the user's own model and data through every verb, and bad task files refused early.

The model and data here are in no kit: a fully connected network written below, trained in
the test on scikit-learn's bundled handwritten digits (8x8 images, 10 classes), with its
weights in safetensors and its data in CSV files.
"""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

import rtinfer
from rtinfer import tasks
from rtinfer.cli import app
from rtinfer.errors import TaskError

runner = CliRunner()

def test_a_task_loads_as_a_kit_with_the_users_splits_and_metric(digits: Path) -> None:
    task = tasks.load(digits)
    assert task.name == "digits" and task.metric == "accuracy"
    assert task.split_names == ["train", "calibration", "validation", "test"]
    assert [len(task.split(s)) for s in ("train", "validation", "test")] == [1100, 350, 347]
    assert task.labels == [str(i) for i in range(10)]
    assert list(task.model.spec.input_names) == ["pixels"]
    assert list(task.model.spec.output_names) == ["logits"]  # what the agreement guard reads
    assert task.model.load_torch() is not None and task.techniques_skipped == {}
    with rtinfer.load(task.model, threads=1) as s:
        metrics = task.evaluate_session(s)
    assert metrics["accuracy"] > 0.9 and set(metrics) == {"accuracy", "macro_f1"}


def test_a_task_given_as_a_python_mapping_is_the_same_task(digits: Path) -> None:
    import tomllib

    doc = tomllib.loads(digits.read_text())
    task, ref = tasks.load(doc, base=digits.parent), tasks.load(digits)
    assert (task.name, task.metric, task.labels) == (ref.name, ref.metric, ref.labels)
    for name in ref.split_names:
        assert np.array_equal(task.split(name).inputs["pixels"], ref.split(name).inputs["pixels"])
        assert np.array_equal(task.split(name).targets, ref.split(name).targets)
    bad = {**doc, "data": {**doc["data"], "label": "kind"}}
    with pytest.raises(TaskError, match=r"no label column 'kind'"):
        tasks.load(bad, base=digits.parent)


@pytest.mark.slow
def test_optimize_a_task_file_tries_every_technique_and_serves_raw_rows(
        digits: Path, tmp_path: Path) -> None:
    """The issue's check: pruning, distillation and int8 candidates in the table with the
    user's metric, a choice within budget on the user's held-out split, raw rows served.

    With 350 validation and 347 test samples (27-40 per class) one sample is 0.3 points of
    agreement and 2.5-4 points of a class's recall, so the guards are set to what such
    splits can resolve: the defaults (0.98, 5 points) would be decided by two samples."""
    repo, out = tmp_path / "repo", tmp_path / "optimize.json"
    res = runner.invoke(app, ["optimize", str(digits), "--max-drop", "1pt,class_recall=12pt",
                              "--min-agreement", "0.95", "--engines",
                              "onnxruntime", "--time-budget", "100s", "--window", "0.05",
                              "--out", str(repo), "--json", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    variants = {r["variant"] for r in result["candidates"]}
    assert {"fp32", "int8-static", "pruned", "distilled"} <= variants, variants
    assert any(v.startswith(("pruned+int8", "distilled+int8")) for v in variants)
    for row in result["candidates"]:
        assert "accuracy" in row["validation"]["metrics"]
    held = result["held_out"]
    assert held["budget"]["within_budget"] and held["samples"] == 347
    assert held["chosen"]["accuracy"] >= held["original"]["accuracy"] - 0.01
    # The pruned and distilled models really are smaller.
    sizes = {r["variant"]: r["size_bytes"] for r in result["candidates"]}
    assert sizes["pruned"] < 0.7 * sizes["fp32"] and sizes["distilled"] < 0.7 * sizes["fp32"]

    settings = json.loads((repo / "digits" / "rtinfer.json").read_text())
    assert settings["raw"]["kind"] == "columns"
    from rtinfer.serve import create_app, load_repository
    from rtinfer.serve.inthread import serve_in_thread

    rows = []
    with (digits.parent / "test.csv").open() as f:
        for i, row in enumerate(csv.DictReader(f)):
            rows.append(row)
            if i == 4:
                break
    with serve_in_thread(create_app(load_repository(repo)), "/v2/health/ready") as base:
        client = httpclient.InferenceServerClient(base.removeprefix("http://"))
        feeds = []
        for c in (f"p{i}" for i in range(64)):
            inp = httpclient.InferInput(c, [len(rows)], "FP64")
            inp.set_data_from_numpy(np.asarray([float(r[c]) for r in rows]))
            feeds.append(inp)
        got = client.infer("digits", feeds).as_numpy("logits")
    x = np.asarray([[float(r[f"p{i}"]) for i in range(64)] for r in rows], np.float32)
    with rtinfer.load(repo / "digits", threads=1) as s:
        want = s.run({"pixels": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_an_onnx_task_with_npz_and_a_split_rule_quantizes_from_the_cli(
        digits: Path, tmp_path: Path) -> None:
    """An ONNX model has no torch form: the ONNX-side passes run, the rest say why not."""
    task = tasks.load(digits)
    model = tmp_path / "model.onnx"
    model.write_bytes(task.model.path.read_bytes())
    x = np.concatenate([task.split(s).inputs["pixels"] for s in ("train", "validation")])
    y = np.concatenate([task.split(s).targets for s in ("train", "validation")])
    np.savez(tmp_path / "all.npz", pixels=x, label=y)
    (tmp_path / "task.toml").write_text(textwrap.dedent('''
        [model]
        onnx = "model.onnx"
        [data]
        path = "all.npz"
        split = { calibration = 0.2, validation = 0.4, test = 0.4 }
        seed = 3
    '''))
    onnx_task = tasks.load(tmp_path / "task.toml")
    assert set(onnx_task.techniques_skipped) == {"pruning", "distillation"}
    assert "no PyTorch form" in onnx_task.techniques_skipped["pruning"]
    res = runner.invoke(app, ["quantize", str(tmp_path / "task.toml"), "--qat-steps", "0",
                              "--out", str(tmp_path / "repo"), "--json",
                              str(tmp_path / "q.json"), "--quiet"])
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["status"] == "ok" and q["held_out"]["budget"]["within_budget"]
    assert q["held_out"]["int8"]["accuracy"] > 0.9
    assert (tmp_path / "repo" / "task-int8" / "1" / "manifest.json").is_file()


def _edit(task: Path, old: str, new: str) -> Path:
    text = task.read_text()
    assert old in text
    out = task.parent / "edited.toml"
    out.write_text(text.replace(old, new))
    return out


@pytest.mark.parametrize(("old", "new", "message"), [
    ('label = "digit"', 'label = "kind"', r"no label column 'kind'.*data\.label"),
    ('torch = "', 'torch = "no_such_pkg.models:build"  # was "',
     r"model\.torch: cannot import 'no_such_pkg\.models'"),
    ("hidden = 96", "hidden = 32", r"model\.weights: 'net\.safetensors' does not fit.*shapes"),
    ('weights = "net.safetensors"', 'weights = "net.pt"', r"never unpickles"),
    ('test = "test.csv"', 'test = "train.csv"', r"1100 row\(s\) of the test split also appear"),
    ('metric = "accuracy"', 'metric = "roc_auc"', r"roc_auc is for two classes"),
    ("[data]", "[data]\ncolour = 1", r"\[data\]: unknown field\(s\) \['colour'\]"),
    ('validation = "validation.csv"\n', "", r"data\.validation: missing"),
])
def test_bad_task_files_fail_early_naming_file_field_and_fix(
        digits: Path, old: str, new: str, message: str) -> None:
    bad = _edit(digits, old, new)
    with pytest.raises(TaskError, match=message) as info:
        tasks.load(bad)
    assert str(bad.resolve()) in str(info.value) or str(digits.parent) in str(info.value)


def test_bad_data_files_fail_naming_the_line_or_class(digits: Path) -> None:
    folder = digits.parent
    lines = (folder / "test.csv").read_text().splitlines()
    (folder / "ragged.csv").write_text("\n".join([*lines[:5], lines[5] + ",7", *lines[6:]]))
    with pytest.raises(TaskError, match=r"ragged\.csv: line 6 has 66 fields but the header "
                                        r"has 65"):
        tasks.load(_edit(digits, 'test = "test.csv"', 'test = "ragged.csv"'))
    (folder / "unseen.csv").write_text("\n".join([*lines[:-1], lines[-1].rsplit(",", 1)[0]
                                                  + ",11"]))
    with pytest.raises(TaskError, match=r"unseen\.csv: label column 'digit' has class\(es\) "
                                        r"\['11'\] that are not among the classes"):
        tasks.load(_edit(digits, 'test = "test.csv"', 'test = "unseen.csv"'))


def test_parquet_data_reads_like_csv(digits: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    with (digits.parent / "test.csv").open() as f:
        rows = list(csv.DictReader(f))
    table = pa.table({k: [float(r[k]) if k != "digit" else int(r[k]) for r in rows]
                      for k in rows[0]})
    pq.write_table(table, digits.parent / "test.parquet")
    a = tasks.load(digits).split("test")
    b = tasks.load(_edit(digits, 'test = "test.csv"', 'test = "test.parquet"')).split("test")
    np.testing.assert_array_equal(a.inputs["pixels"], b.inputs["pixels"])
    np.testing.assert_array_equal(a.targets, b.targets)


def test_prune_and_distill_verbs_take_a_task_file(digits: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["prune", str(digits), "--structured", "--amount", "0.5",
                              "--finetune-steps", "30", "--lr", "0.001", "--no-measure",
                              "--json", str(tmp_path / "p.json"), "--quiet"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["task"] == "digits" and report["size"]["pruned"]["parameters"] < \
        0.6 * report["size"]["original"]["parameters"]
    assert report["held_out"]["samples"] == 347
    res = runner.invoke(app, ["distill", "--kit", "fraud", str(digits)])
    assert res.exit_code != 0 and "one of them" in res.output


def test_a_text_task_needs_a_tokenizer(digits: Path) -> None:
    bad = _edit(digits, 'label = "digit"', 'label = "digit"\ntext = "p0"')
    with pytest.raises(TaskError, match=r"data\.text: tokenizing text needs the model's "
                                        r"tokenizer"):
        tasks.load(bad)


def test_a_task_file_that_is_not_there_or_not_toml(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="no task file"):
        tasks.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[model\nonnx = 1")
    with pytest.raises(TaskError, match="not valid TOML"):
        tasks.load(tmp_path / "bad.toml")


def test_csv_details_users_files_have(tmp_path: Path) -> None:
    """Excel's BOM, quoted commas, and integer labels named by data.classes."""
    from rtinfer.tasks.data import encode_labels, read_table

    (tmp_path / "a.csv").write_bytes('\ufeffnote,x,label\n"a, b",1.5,0\nc,2,1\n'.encode())
    table = read_table(tmp_path / "a.csv")
    assert list(table) == ["note", "x", "label"] and table["note"][0] == "a, b"
    assert encode_labels(table, "a.csv", "label", ["neg", "pos"]).tolist() == [0, 1]


def test_spec_rules_on_labels(tmp_path: Path) -> None:
    from rtinfer.tasks.spec import read_task

    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2)
    (tmp_path / "m.onnx").write_bytes(b"")
    base = '[model]\nonnx = "m.onnx"\n[data]\npath = "d.npz"\n'
    (tmp_path / "t.toml").write_text(base + "label = false\n")
    assert read_task(tmp_path / "t.toml").data.label is None  # no labels: a user metric judges
    (tmp_path / "t.toml").write_text(base + 'label = "y"\nfeatures = ["x", "y"]\n')
    with pytest.raises(TaskError, match="lists the label column 'y' as a model input"):
        read_task(tmp_path / "t.toml")


def test_overlap_is_found_across_file_formats(tmp_path: Path, write_csv: Any) -> None:
    """The same rows as CSV floats in one split and npz integers in another still overlap."""
    from rtinfer.tasks.data import split_tables
    from rtinfer.tasks.spec import DataSpec

    write_csv(tmp_path / "train.csv", np.arange(12.0).reshape(6, 2), np.arange(6) % 2)
    np.savez(tmp_path / "test.npz", p0=np.array([4, 100]), p1=np.array([5, 101]),
             digit=np.array([0, 1]))
    spec = DataSpec(files={"train": tmp_path / "train.csv", "test": tmp_path / "test.npz"},
                    fractions=None, label="digit")
    with pytest.raises(TaskError, match="1 row\\(s\\) of the test split also appear"):
        split_tables(spec, "digit")


def test_bench_model_takes_a_task_file_and_times_its_real_rows(
        digits: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench-model", str(digits), "-b", "1,8", "--window", "0.05",
                              "-t", "1", "--json", str(tmp_path / "b.json"), "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["model"]["source"]["kind"] == "torch"
    assert [r["batch"] for r in result["results"]] == [1, 8]
