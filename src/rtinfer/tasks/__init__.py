"""Tasks: the user's own model, data and metric, for every verb the kits have.

    task = rtinfer.tasks.load("task.toml")     # checked before any long work
    task.split("validation").inputs            # model inputs, labels as integers
    rtinfer.optimize(kit=task, max_drop="1pt", out="repo")

    $ rtinfer optimize task.toml --max-drop 1pt --out repo      (likewise quantize, prune,
                                                                 distill)

The task file's format is in :mod:`rtinfer.tasks.spec`. A loaded task is a
:class:`~rtinfer.kits.Kit` (a :class:`Task`): the pipeline treats it exactly as a built-in
kit — calibration, validation and test splits, the declared metrics under the budget, the
training split for pruning and distillation when the model has a torch form, and for text
tasks the varied-sentence guard and teacher-labelled variants for distillation.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer.errors import TaskError
from rtinfer.kits.base import Kit, KitRecipe, Split
from rtinfer.models.imported import ImportedModel
from rtinfer.tasks.data import (
    Table,
    class_names,
    encode_labels,
    input_columns,
    split_tables,
    table_inputs,
)
from rtinfer.tasks.spec import SPLITS, DataSpec, TaskSpec, read_task

__all__ = ["Task", "TaskSpec", "is_task_file", "load", "read_task"]

_CALIBRATION_ROWS = 256  # sampled from the training split when the task names no calibration
# A transformers folder's weight files: not what a tokenizer needs.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ckpt")


def is_task_file(value: Any) -> bool:
    return isinstance(value, str | Path) and str(value).endswith(".toml")


@dataclass
class Task(Kit):
    """A loaded task: a kit whose model and splits come from the user's files."""

    spec: TaskSpec | None = None
    splits: dict[str, Split] = field(default_factory=dict)
    model: ImportedModel | None = None

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise ValueError(f"task '{self.name}' has no split '{name}'; it has "
                             f"{self.split_names}")
        return self.splits[name]

    def original_model(self) -> ImportedModel:
        assert self.model is not None
        return self.model

    @property
    def model_path(self) -> Path:
        return self.original_model().path

    @property
    def techniques_skipped(self) -> dict[str, str]:
        """Torch-side techniques this task cannot use, and why (optimize reports them)."""
        if self.model is None or (self.model.torch_module is None
                                  and self.model.torch_loader is None):
            why = ("the model has no PyTorch form (an ONNX file); give a torch entry point "
                   "or a transformers folder in the task file")
        elif "train" not in self.splits:
            why = "the task has no training split (data.train)"
        else:
            return {}
        return {"pruning": why, "distillation": why}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the task file and every split's arrays: what a saved search is keyed by."""
        digest = hashlib.sha256(self.spec.text if self.spec else b"")
        if self.model is not None:  # the exported graph: an edited forward() changes it
            digest.update(self.model.path.read_bytes())
        for name, split in self.splits.items():
            for key, value in sorted({**split.inputs, "targets": split.targets}.items()):
                digest.update(f"{name}/{key}{value.shape}{value.dtype}".encode())
                digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()

    def raw_settings(self, folder: Path) -> dict[str, Any]:
        """What ``rtinfer serve`` needs to accept this task's raw inputs for a model written to
        ``folder`` (a repository's model folder): a text task's tokenizer files are copied
        into ``folder/preprocess`` (the server opens nothing outside its repository); a
        tabular task's column mapping is recorded."""
        assert self.spec is not None and self.model is not None
        data = self.spec.data
        if data.text:
            assert self.spec.model.path is not None
            target = folder / "preprocess"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for f in self.spec.model.path.iterdir():  # everything but the weights
                if f.is_file() and f.suffix not in _WEIGHT_SUFFIXES and \
                        not f.name.endswith(".index.json"):
                    shutil.copyfile(f, target / f.name)
            return {"kind": "text", "tokenizer": "preprocess", "max_length": data.max_length,
                    "inputs": list(self.model.spec.input_names)}
        names = list(self.model.spec.input_names)
        columns = self.split("test").raw
        if data.inputs is not None:
            mapping = {k: list(v) for k, v in data.inputs.items()}
        elif len(names) == 1 and columns:
            mapping = {names[0]: list(columns)}
        else:
            return {}
        return {"kind": "columns", "inputs": mapping,
                "dtypes": {t.name: t.dtype for t in self.model.spec.inputs}}


def load(path: str | Path | Mapping[str, Any], base: str | Path | None = None) -> Task:
    """Read, check and load a task — a task file, or its fields as a mapping with relative
    paths from ``base`` (:func:`~rtinfer.tasks.spec.read_task`): model imported, data split
    and encoded."""
    spec = read_task(path, base)
    data = spec.data
    classifier = data.label is not None
    tables = split_tables(data, data.label)
    files = {s: str(data.files.get(s, data.files.get("all"))) for s in tables}
    for s, t in tables.items():
        if data.label is not None and data.label not in t:
            raise TaskError(f"{files[s]}: no label column '{data.label}'; it has "
                            f"{sorted(t)[:20]}. Set data.label to the column that holds the "
                            "classes")
    classes = class_names(tables, data, data.label) if data.label is not None else []
    if classifier and len(classes) < 2:
        raise TaskError(f"{files.get('train', spec.file)}: label column '{data.label}' has one "
                        "class; a classifier needs at least two")
    targets = {s: encode_labels(t, files[s], data.label, classes) if data.label else
               np.zeros(len(next(iter(t.values()))), np.int64) for s, t in tables.items()}

    from rtinfer.tasks import model as task_model

    imported = task_model.import_task_model(spec)
    module = None
    if imported is None:
        module = task_model.build_module(spec)
        names = task_model.forward_inputs(module)
        dtypes = _module_dtypes(next(iter(tables.values())), data, names)
    else:
        names = list(imported.spec.input_names)
        dtypes = {t.name: t.dtype for t in imported.spec.inputs}
    preprocess = _preprocessor(spec, names, dtypes)
    splits: dict[str, Split] = {}
    for s, table in tables.items():
        raw = _raw(table, spec, names)
        if data.text:
            if data.text not in table:
                raise TaskError(f"{files[s]}: no text column '{data.text}'; it has "
                                f"{sorted(table)}")
            inputs = preprocess({}, [str(x) for x in table[data.text]])
        else:
            inputs = table_inputs(table, files[s], data, names, dtypes, data.label)
        splits[s] = Split(inputs=inputs, targets=targets[s], raw=raw)
    if "calibration" not in splits:  # a seeded sample of training rows (never the first
        source = splits.get("train", splits["validation"])  # rows: files are often sorted)
        pick = np.sort(np.random.default_rng(data.seed).permutation(len(source))[
            :_CALIBRATION_ROWS])
        splits["calibration"] = Split({k: v[pick] for k, v in source.inputs.items()},
                                      source.targets[pick], {k: v[pick] for k, v in
                                                             source.raw.items()})
    if module is not None:
        first = splits.get("train", splits["validation"]).inputs
        imported = task_model.export_module(spec, module, {k: v[:2] for k, v in first.items()},
                                            classifier=classifier, text=data.text is not None)
    assert imported is not None
    _check_outputs(spec, imported, splits["validation"], len(classes))
    metric_name, evaluate = _metric(spec, classifier, len(classes))
    recipe = KitRecipe(
        name=spec.name, description=f"task {spec.file}",
        task="binary" if len(classes) == 2 else "multiclass", metric=metric_name,
        objective_p99_ms=spec.objective_p99_ms or 0.0, version=1, build=_no_build,
        preprocess=preprocess, evaluate=evaluate)
    order = [s for s in SPLITS if s in splits]
    meta = {"labels": classes, "splits": order, "models": {}, "quality": {}, "size": "full",
            "task_file": str(spec.file)}
    return Task(recipe=recipe, path=spec.folder, meta=meta, spec=spec,
                splits={s: splits[s] for s in order}, model=imported)


def _module_dtypes(table: Table, data: DataSpec, names: Sequence[str]) -> dict[str, str]:
    """A torch entry point's input dtypes: int64 for token ids (text, or an input fed by
    signed-integer arrays such as an .npz's ``input_ids``), float32 for the rest (features,
    pixels: a CSV's numbers and uint8 images included)."""
    if data.text:
        return {n: "int64" for n in names}
    out = {}
    for n in names:
        kinds = {table[c].dtype.kind for c in input_columns(table, data, n, data.label)
                 if c in table}
        out[n] = "int64" if kinds == {"i"} else "float32"
    return out


def _raw(table: Mapping[str, np.ndarray], spec: TaskSpec,
         names: Sequence[str]) -> dict[str, np.ndarray]:
    """What a raw request would carry: the text, or the feature columns."""
    data = spec.data
    if data.text:
        return {"sentence": table[data.text]} if data.text in table else {}
    if data.inputs is None and all(n in table for n in names):
        return {}  # arrays named after the inputs (an .npz): no per-column raw form
    columns = [c for cols in (data.inputs or {}).values() for c in cols] or list(
        data.features or [c for c in table if c != data.label and c not in names])
    return {c: table[c] for c in columns if c in table}


def _preprocessor(spec: TaskSpec, names: Sequence[str], dtypes: Mapping[str, str]) -> Any:
    data = spec.data
    if data.text:
        if spec.model.kind != "transformers":
            raise TaskError(f"{spec.file}: data.text: tokenizing text needs the model's "
                            "tokenizer: use a transformers folder (model.transformers)")
        from rtinfer.models.transformers_folder import tokenize

        folder = spec.model.path
        assert folder is not None
        wanted = list(names)

        def text(_meta: Any, items: Sequence[Any]) -> dict[str, np.ndarray]:
            if len(items) == 0 or not all(isinstance(s, str) for s in items):
                raise ValueError("text inputs are a non-empty list of strings")
            enc = tokenize(folder, list(items), max_length=data.max_length)
            missing = [n for n in wanted if n not in enc]
            if missing:
                raise TaskError(f"{spec.file}: the tokenizer gives {sorted(enc)} but the "
                                f"model needs {missing}")
            return {n: enc[n] for n in wanted}

        return text

    def rows(_meta: Any, items: Sequence[Any]) -> dict[str, np.ndarray]:
        if len(items) == 0 or not all(isinstance(r, Mapping) for r in items):
            raise ValueError("tabular inputs are a non-empty list of records (column -> value)")
        columns = {k: np.asarray([r[k] for r in items]) for k in items[0]}
        return table_inputs(columns, "request", data, names, dtypes, data.label)

    return rows


def _metric(spec: TaskSpec, classifier: bool, n_classes: int) -> tuple[str, Any]:
    """(headline name, evaluate(meta, targets, outputs)) for the task's metric."""
    if ":" in spec.metric:
        from rtinfer.optimize.evaluate import user_metric
        from rtinfer.tasks.model import task_importable

        with task_importable(spec):  # a metric module beside the task file imports
            name, fn = user_metric(spec.metric)
        return name, lambda _meta, targets, outputs: fn(targets, outputs)
    if not classifier:
        raise TaskError(f"{spec.file}: metric: '{spec.metric}' needs labels (data.label); "
                        "without them give your own metric as package.module:function")
    if spec.metric in ("roc_auc", "pr_auc") and n_classes != 2:
        raise TaskError(f"{spec.file}: metric: {spec.metric} is for two classes; this task "
                        f"has {n_classes}: use accuracy or macro_f1")
    from rtinfer.metrics import accuracy, average_precision, macro_f1, roc_auc

    def evaluate(_meta: Any, targets: np.ndarray,
                 outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        s = outputs[_scores(outputs, n_classes)]
        out = {"accuracy": accuracy(targets, s),
               "macro_f1": macro_f1(targets, s, n_classes=n_classes)}
        if n_classes == 2:  # ranked by the margin: the order of p(1), without float ties
            margin = s[:, 1].astype(np.float64) - s[:, 0].astype(np.float64)
            out.update(roc_auc=roc_auc(targets, margin),
                       pr_auc=average_precision(targets, margin))
        return out if spec.metric == "accuracy" else {spec.metric: out.pop(spec.metric), **out}

    return spec.metric, evaluate


def _scores(outputs: Mapping[str, np.ndarray], n_classes: int) -> str:
    """The output holding the class scores: the one the agreement guard reads (``logits``,
    ``probabilities``, …) when it has a column per class, else the first that has."""
    from rtinfer.optimize.budget import class_output

    named = class_output(outputs)
    if named is not None and outputs[named].shape[1] == n_classes:
        return named
    found = [k for k, v in outputs.items()
             if v.ndim == 2 and v.dtype.kind == "f" and v.shape[1] == n_classes]
    if not found:
        raise ValueError(f"no (N, {n_classes}) float output among "
                         f"{ {k: v.shape for k, v in outputs.items()} }")
    return found[0]


def _check_outputs(spec: TaskSpec, model: ImportedModel, split: Split, n_classes: int) -> None:
    """The model runs on the task's inputs, and a classifier's scores have a column per class."""
    from rtinfer.engines import load

    few = {k: v[:2] for k, v in split.inputs.items()}
    try:
        with load(model, "onnxruntime", 1, warmup=False) as s:
            out = s.run(few)
    except Exception as exc:  # the data does not fit the model: say so before any work
        raise TaskError(f"{spec.file}: the model does not run on the task's data: "
                        f"{type(exc).__name__}: {exc}") from None
    if n_classes:
        widths = {k: v.shape[1:] for k, v in out.items()}
        if (n_classes,) not in widths.values():
            headless = (spec.model.kind == "transformers"
                        and "logits" not in model.spec.output_names)
            raise TaskError(
                f"{spec.file}: the data has {n_classes} classes but no model output has "
                f"{n_classes} columns (outputs' shapes past the batch: {widths}); "
                + ("the folder's config.json names no ...ForSequenceClassification "
                   "architecture, so it was imported without a classification head"
                   if headless else
                   "a classifier needs (N, classes) scores — a single-logit binary model "
                   "needs a 2-column output; else check data.label and data.classes"))


def _no_build(_folder: Path, _size: str, _progress: Any) -> dict[str, Any]:
    raise TaskError("a task is loaded from its files (rtinfer.tasks.load), never built")
