"""A built kit as a task file: the description a user writes for their own model and data.

    print(kits.task_file(kits.load("fraud", build=False)))     # = rtinfer kits show fraud

The file names the kit's main float model — its PyTorch entry point with the artifact's
safetensors weights when the kit saved a torch form (so ``optimize`` can prune and distill
it), else the ONNX file — the kit's ``data.npz`` with the splits it stores, the kit's classes,
its metrics as a ``package.module:function`` of the kit's module (the recipe's
``task_metric``) and its latency objective. Paths are absolute, into the kit's cache folder.
``rtinfer.tasks.load`` on the file gives the kit's splits, metrics and model: nothing about a
kit is special to the pipeline.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rtinfer.kits.base import Kit
from rtinfer.spec import ModelSpec

__all__ = ["task_file"]


def task_file(kit: Kit) -> str:
    """The TOML task file that describes ``kit`` (see the module docstring)."""
    folder = kit.model_path
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    spec = ModelSpec.from_dict(manifest["spec"])
    recipe = kit.recipe
    size = kit.meta.get("size", "full")
    main, *others = kit.models
    lines = [f"# The '{kit.name}' kit ({size} build) as a task file: rtinfer kits show "
             f"{kit.name}" + (" --size small" if size == "small" else ""),
             f"# {recipe.description}",
             f"name = {_value(kit.name)}",
             f"metric = {_value(recipe.task_metric or recipe.metric)}",
             "", f"[model]                          # the kit's main model, {main}"]
    for name in others:  # the kit's other models, as a task would name them
        other = json.loads((kit.models[name] / "manifest.json").read_text(encoding="utf-8"))
        lines.append(f"# {name}: onnx = {_value(str(kit.models[name] / other['model_file']))}")
    later: list[str] = []  # sub-tables: after their table's own keys
    torch_form = manifest.get("torch")
    if torch_form:
        lines.append(f"torch = {_value(torch_form['factory'])}")
        if torch_form.get("kwargs"):
            lines.append(f"kwargs = {_value(torch_form['kwargs'])}")
        lines.append(f"weights = {_value(str(folder / torch_form['weights']))}")
        lines.append(f"outputs = {_value(spec.output_names)}")
        axes = {t.name: {str(axis): d for axis, d in enumerate(t.shape)
                         if axis and isinstance(d, str)} for t in spec.inputs}
        later += _entry("model", "dynamic_axes", {k: v for k, v in axes.items() if v})
    else:
        lines.append(f"onnx = {_value(str(folder / manifest['model_file']))}")
    lines += later
    lines += ["", "[data]",
              f"path = {_value(str(kit.path / 'data.npz'))}",
              'split = "stored"                 # arrays <split>/inputs/<input>, '
              "<split>/targets",
              'label = "targets"',
              *_entry("data", "classes", kit.labels),
              *_entry("data", "inputs", {n: [f"inputs/{n}"] for n in spec.input_names}),
              "", "[objective]",
              f"p99_ms = {_value(float(kit.objective_p99_ms))}", ""]
    return "\n".join(lines)


def _entry(table: str, key: str, value: Any, width: int = 100) -> list[str]:
    """``key = value`` on one line when it fits in ``width``; else a long list one item a
    line, a long table as a ``[table.key]`` sub-table (inline tables cannot span lines)."""
    if not value:
        return []
    line = f"{key} = {_value(value)}"
    if len(line) <= width:
        return [line]
    if isinstance(value, dict):
        return ["", f"[{table}.{key}]", *(f"{_key(k)} = {_value(v)}" for k, v in value.items())]
    return [f"{key} = [", *(f"    {_value(v)}," for v in value), "]"]


def _value(value: Any) -> str:
    """``value`` as TOML: strings, numbers, booleans, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's basic-string escapes; both are UTF-8, so 中文 stays as is.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for a {type(value).__name__}: {value!r}")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
