"""A task file: the user's model, data, metric and objective, described once for every verb.

    name = "digits"                       # optional: the file's stem
    metric = "accuracy"                   # the headline (budget) metric: built-in or pkg.mod:fn

    [model]                               # exactly one of onnx / torch / transformers
    onnx = "model.onnx"
    torch = "digits_net:build"            # an entry point returning a torch.nn.Module, called
    kwargs = { hidden = 64 }              #   with these keyword arguments; the task file's
    weights = "net.safetensors"           #   folder is importable; weights: safetensors only
    outputs = ["probabilities"]           #   its outputs' names [default: a classifier's one
                                          #   output is "logits", a dict's keys name them]
    dynamic_axes = { image = { 2 = "height", 3 = "width" } }  # axes past the batch that vary
                                          #   (as torch.onnx.export takes them) [default: the
                                          #   sequence axis of token inputs]
    transformers = "classifier/"          # config.json + model.safetensors + tokenizer files

    [data]
    train = "train.csv"                   # explicit splits (train, calibration, validation,
    validation = "val.csv"                #   test; CSV, Parquet or .npz) ...
    test = "test.csv"
    path = "all.csv"                      # ... or one file and a seeded, stratified rule
    split = { train = 0.7, calibration = 0.1, validation = 0.1, test = 0.1 }
    seed = 0
    path = "data.npz"                     # ... or one .npz that holds every split, its arrays
    split = "stored"                      #   named <split>/<name>: train/x, train/label, ...
    label = "label"                       # the label column (class names or integers);
                                          #   false: no labels (a user metric judges)
    classes = ["neg", "pos"]              # optional: the class order of the model's outputs
    text = "sentence"                     # a text column, tokenized with the folder's tokenizer
    features = ["f0", "f1"]               # columns of a single-input model, in order [default:
                                          #   every column but the label]
    inputs = { x = ["f0", "f1"] }         # several inputs: columns per model input (one
                                          #   column of rank >= 2, an .npz array such as
                                          #   images (N, 3, 32, 32), is the input as it is)
    max_length = 128                      # tokens, for text

    [objective]
    p99_ms = 10.0
    goal = "latency"                      # or "throughput"

Paths are relative to the task file (or absolute). Every mistake is a
:class:`~rtinfer.errors.TaskError` naming the file, the field and the fix, raised before any
long work starts.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtinfer.errors import TaskError

__all__ = ["BUILTIN_METRICS", "SPLITS", "DataSpec", "ModelSpecRef", "TaskSpec", "read_task"]

SPLITS = ("train", "calibration", "validation", "test")
BUILTIN_METRICS = ("accuracy", "macro_f1", "roc_auc", "pr_auc")
_MODEL_KINDS = ("onnx", "torch", "transformers")
_DATA_SUFFIXES = (".csv", ".parquet", ".npz")
_GOALS = ("latency", "throughput")
_TORCH_ONLY = ("weights", "kwargs", "outputs", "dynamic_axes")


@dataclass(frozen=True)
class ModelSpecRef:
    """Where the task's model comes from."""

    kind: str                          # "onnx", "torch" or "transformers"
    path: Path | None = None           # ONNX file or transformers folder
    entry: str | None = None           # torch: "package.module:function"
    weights: Path | None = None        # torch: a safetensors file
    kwargs: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None           # torch: the exported outputs' names
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # torch: past axis 0


@dataclass(frozen=True)
class DataSpec:
    """Where the task's data comes from and how its columns become model inputs."""

    files: dict[str, Path]             # split -> file, or {"all": file} with ``fractions``
    fractions: dict[str, float] | None  #   or ``stored`` (the file's own splits)
    seed: int = 0
    label: str | None = "label"
    classes: tuple[str, ...] | None = None
    text: str | None = None
    features: tuple[str, ...] | None = None
    inputs: dict[str, tuple[str, ...]] | None = None
    max_length: int = 128
    stored: bool = False               # {"all": an .npz} whose arrays are <split>/<name>


@dataclass(frozen=True)
class TaskSpec:
    """A parsed, checked task file (:func:`read_task`)."""

    file: Path
    name: str
    model: ModelSpecRef
    data: DataSpec
    metric: str
    objective_p99_ms: float | None
    goal: str
    text: bytes = b""  # the file's bytes (a mapping's canonical JSON): part of the fingerprint

    @property
    def folder(self) -> Path:
        return self.file.parent


def read_task(source: str | Path | Mapping[str, Any], base: str | Path | None = None
              ) -> TaskSpec:
    """Parse and check a task: ``source`` is a TOML task file, or the same fields as a Python
    mapping (``{"model": {...}, "data": {...}}``) whose relative paths start at ``base``
    (default: the working folder); see the module docstring."""
    if isinstance(source, Mapping):
        file = Path(base or ".").resolve() / "<task given as a mapping>"
        doc = dict(source)
        text = json.dumps(doc, sort_keys=True, default=str).encode()
    else:
        file = Path(source)
        if not file.is_file():
            raise TaskError(f"no task file at '{file}'; give the path of a task .toml file")
        try:
            text = file.read_bytes()
            doc = tomllib.loads(text.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TaskError(f"{file}: not valid TOML ({exc}); fix the syntax") from None
    where = _Where(file)
    where.only(doc, "the top level", ("name", "metric", "model", "data", "objective"))
    name = doc.get("name", "task" if isinstance(source, Mapping) else file.stem)
    if not isinstance(name, str) or not name.strip():
        raise where.error("name", "must be a non-empty string")
    metric = doc.get("metric", "accuracy")
    if not isinstance(metric, str) or not (metric in BUILTIN_METRICS or ":" in metric):
        raise where.error("metric", f"{metric!r} is neither a built-in metric "
                          f"{list(BUILTIN_METRICS)} nor a 'package.module:function'")
    objective = where.table(doc, "objective", required=False)
    where.only(objective, "[objective]", ("p99_ms", "goal"))
    p99 = objective.get("p99_ms")
    if p99 is not None and (not isinstance(p99, int | float) or p99 <= 0):
        raise where.error("objective.p99_ms", f"must be a positive number of ms, got {p99!r}")
    goal = objective.get("goal", "latency")
    if goal not in _GOALS:
        raise where.error("objective.goal", f"must be one of {list(_GOALS)}, got {goal!r}")
    return TaskSpec(file=file.resolve(), name=name.strip(), model=_model(doc, where),
                    data=_data(doc, where), metric=metric,
                    objective_p99_ms=float(p99) if p99 is not None else None, goal=goal,
                    text=text)


def _model(doc: Mapping[str, Any], where: _Where) -> ModelSpecRef:
    table = where.table(doc, "model")
    where.only(table, "[model]", (*_MODEL_KINDS, *_TORCH_ONLY))
    kinds = [k for k in _MODEL_KINDS if k in table]
    if len(kinds) != 1:
        raise where.error("model", f"name exactly one of {list(_MODEL_KINDS)}; it names "
                          f"{kinds or 'none'}")
    kind = kinds[0]
    extra = [k for k in _TORCH_ONLY if k in table]
    if kind != "torch" and extra:
        raise where.error(f"model.{extra[0]}", f"{', '.join(extra)} belong to a torch entry "
                          f"point (model.torch), not to model.{kind}")
    if kind == "torch":
        entry = table["torch"]
        module, _, func = str(entry).partition(":")
        if not isinstance(entry, str) or not module or not func:
            raise where.error("model.torch", f"must be 'package.module:function', got {entry!r}")
        kwargs = table.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise where.error("model.kwargs", "must be a table of keyword arguments")
        weights = None
        if "weights" in table:
            weights = where.path(table["weights"], "model.weights")
            if weights.suffix != ".safetensors":
                raise where.error("model.weights", f"'{weights.name}' is not a .safetensors "
                                  "file; rtinfer never unpickles weights (.pt/.pth/.bin). Save "
                                  "them with safetensors.torch.save_file(module.state_dict(), "
                                  "...)")
        return ModelSpecRef("torch", entry=entry, weights=weights, kwargs=dict(kwargs),
                            outputs=_output_names(table, where),
                            dynamic_axes=_dynamic_axes(table, where))
    path = where.path(table[kind], f"model.{kind}")
    if kind == "onnx" and not path.is_file():
        raise where.error("model.onnx", f"'{path}' is not a file")
    if kind == "transformers" and not (path / "config.json").is_file():
        raise where.error("model.transformers", f"'{path}' is not a transformers folder "
                          "(config.json, model.safetensors and the tokenizer's files)")
    return ModelSpecRef(kind, path=path)


def _output_names(table: Mapping[str, Any], where: _Where) -> tuple[str, ...] | None:
    names = table.get("outputs")
    if names is None:
        return None
    if (not isinstance(names, list) or not names or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n for n in names)):
        raise where.error("model.outputs", f"must list distinct output names, one per output "
                          f"of the module, e.g. [\"logits\"]; got {names!r}")
    return tuple(names)


def _dynamic_axes(table: Mapping[str, Any], where: _Where) -> dict[str, dict[int, str]]:
    """``{ image = { 2 = "height", 3 = "width" } }``: TOML keys are strings, axes integers."""
    value = table.get("dynamic_axes", {})
    example = '{ image = { 2 = "height", 3 = "width" } }'
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise where.error("model.dynamic_axes", f"must map inputs to {{ axis = \"name\" }}, "
                          f"e.g. {example}; got {value!r}")
    out: dict[str, dict[int, str]] = {}
    for name, axes in value.items():
        for axis, symbol in axes.items():
            if not axis.isdigit() or int(axis) < 1 or not isinstance(symbol, str) or not symbol:
                raise where.error(f"model.dynamic_axes.{name}", f"{axis} = {symbol!r}: give "
                                  "an axis >= 1 (axis 0 is always the batch) and a name, e.g. "
                                  f"{example}")
        out[str(name)] = {int(axis): symbol for axis, symbol in axes.items()}
    return out


def _data(doc: Mapping[str, Any], where: _Where) -> DataSpec:
    table = where.table(doc, "data")
    where.only(table, "[data]", (*SPLITS, "path", "split", "seed", "label", "classes", "text",
                                 "features", "inputs", "max_length"))
    explicit = {s: where.path(table[s], f"data.{s}") for s in SPLITS if s in table}
    fractions = None
    stored = False
    if "path" in table:
        if explicit:
            raise where.error("data.path", f"give one file with a split rule or files per "
                              f"split, not both (it also names {sorted(explicit)})")
        files = {"all": where.path(table["path"], "data.path")}
        rule = table.get("split", {"train": 0.7, "calibration": 0.1, "validation": 0.1,
                                   "test": 0.1})
        stored = rule == "stored"
        if stored:
            if files["all"].suffix.lower() != ".npz":
                raise where.error("data.split", f"'stored' splits are read from an .npz "
                                  f"(arrays named <split>/<name>); '{files['all'].name}' is "
                                  "not one: give a split rule such as { train = 0.8, "
                                  "validation = 0.1, test = 0.1 }")
        elif not isinstance(rule, dict) or not rule or any(
                s not in SPLITS or not isinstance(v, int | float) or v < 0
                for s, v in rule.items()):
            raise where.error("data.split", f"must map splits {list(SPLITS)} to shares >= 0 "
                              f"(or be \"stored\": the .npz's own splits), got {rule!r}")
        else:
            fractions = {s: float(v) for s, v in rule.items() if v > 0}
            for needed in ("validation", "test"):
                if needed not in fractions:
                    raise where.error("data.split", f"needs a '{needed}' share")
    else:
        if "split" in table:
            raise where.error("data.split", "a split rule needs one file in data.path")
        for needed in ("validation", "test"):
            if needed not in explicit:
                raise where.error(f"data.{needed}", f"missing: give a '{needed}' file (or one "
                                  "file in data.path with a split rule)")
        files = explicit
    for key, f in files.items():
        if f.suffix.lower() not in _DATA_SUFFIXES:
            raise where.error(f"data.{'path' if key == 'all' else key}",
                              f"'{f.name}' is not one of {list(_DATA_SUFFIXES)}")
        if not f.is_file():
            raise where.error(f"data.{'path' if key == 'all' else key}", f"no file at '{f}'")
    label = table.get("label", "label")
    if label is False or label == "":  # no labels: judged by fidelity or a user metric
        label = None
    elif not isinstance(label, str):
        raise where.error("data.label", "must be a column name, or false for no labels")
    classes = table.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) < 2
                                or len(set(map(str, classes))) != len(classes)):
        raise where.error("data.classes", "must list at least two distinct class names")
    features = table.get("features")
    inputs = table.get("inputs")
    text = table.get("text")
    if sum(x is not None for x in (features, inputs, text)) > 1:
        raise where.error("data", "give one of text, features or inputs")
    if features is not None and (not isinstance(features, list) or not features):
        raise where.error("data.features", "must list column names")
    if inputs is not None and (not isinstance(inputs, dict) or not inputs or not all(
            isinstance(v, list) and v for v in inputs.values())):
        raise where.error("data.inputs", "must map each model input to a list of columns")
    used = list(features or []) + [c for v in (inputs or {}).values() for c in v]
    if label is not None and label in used:
        raise where.error("data.features" if features else "data.inputs",
                          f"lists the label column '{label}' as a model input; the label "
                          "must not be an input (it would leak the answer)")
    max_length = table.get("max_length", 128)
    if not isinstance(max_length, int) or max_length < 2:
        raise where.error("data.max_length", f"must be an integer >= 2, got {max_length!r}")
    seed = table.get("seed", 0)
    if not isinstance(seed, int):
        raise where.error("data.seed", f"must be an integer, got {seed!r}")
    return DataSpec(
        files=files, fractions=fractions, seed=seed, label=label,
        classes=tuple(map(str, classes)) if classes else None, text=text,
        features=tuple(map(str, features)) if features else None,
        inputs={str(k): tuple(map(str, v)) for k, v in inputs.items()} if inputs else None,
        max_length=max_length, stored=stored)


class _Where:
    """Error messages that name the task file and the field."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def error(self, key: str, what: str) -> TaskError:
        return TaskError(f"{self.file}: {key}: {what}")

    def table(self, doc: Mapping[str, Any], key: str, required: bool = True) -> dict[str, Any]:
        value = doc.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"[{key}]", "missing; see `rtinfer tasks --help` for the fields"
                             if value is None else "must be a table")
        return value

    def only(self, table: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.error(where, f"unknown field(s) {unknown}; allowed: {list(allowed)}")

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str | Path) or not str(value):  # a Path: a mapping's
            raise self.error(key, f"must be a path (a string), got {value!r}")
        return (self.file.parent / value).resolve()
