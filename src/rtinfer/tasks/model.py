"""A task's model: an ONNX file, a torch entry point with safetensors weights, or a
transformers folder, imported into rtinfer's common form.

A torch entry point (``package.module:function``) is the user's own code: the task file names
it, so the user chose to run it (the task file's folder is importable while it is imported, as
a project root is; a module of that name beside the task file is always imported afresh).
Its weights load from a safetensors file only, strictly: a missing, unexpected or mis-shaped
tensor is an error that lists them. The module is exported to ONNX with a dynamic batch axis
(the sequence axis of text inputs and the task's ``model.dynamic_axes`` too, and its outputs
named by ``model.outputs``), verified against PyTorch, and keeps its module, so the torch-side
passes (pruning, distillation, QAT) can train it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

from rtinfer.errors import RtinferError, TaskError
from rtinfer.models.imported import ImportedModel
from rtinfer.tasks.spec import TaskSpec

__all__ = ["build_module", "export_module", "forward_inputs", "import_task_model",
           "task_importable"]


def import_task_model(spec: TaskSpec) -> ImportedModel | None:
    """The ONNX or transformers model of ``spec`` (None for a torch entry point, which is
    exported once its data is read: :func:`export_module`)."""
    from rtinfer.models import import_model

    ref = spec.model
    if ref.kind == "torch":
        return None
    try:
        return import_model(ref.path)
    except RtinferError as exc:
        raise TaskError(f"{spec.file}: model.{ref.kind}: {exc}") from None


def build_module(spec: TaskSpec) -> Any:
    """The torch module of the task's entry point, with its safetensors weights loaded."""
    from rtinfer._deps import require

    torch = require("torch", "A torch entry point in a task file")
    ref = spec.model
    assert ref.entry is not None
    module_name, _, func = ref.entry.partition(":")
    field = f"{spec.file}: model.torch"
    try:
        with task_importable(spec, module_name):
            factory = getattr(importlib.import_module(module_name), func)
    except ImportError as exc:
        raise TaskError(f"{field}: cannot import '{module_name}' ({exc}); put it beside the "
                        "task file or on PYTHONPATH") from None
    except AttributeError:
        raise TaskError(f"{field}: '{module_name}' has no '{func}'") from None
    try:
        module = factory(**ref.kwargs)
    except Exception as exc:  # the user's code: any failure is theirs to see, named
        raise TaskError(f"{field}: {ref.entry}(**{ref.kwargs}) raised "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise TaskError(f"{field}: {ref.entry} returned a {type(module).__name__}, not a "
                        "torch.nn.Module")
    if ref.weights is not None:
        _load_weights(module, spec)
    return module.eval()


@contextmanager
def task_importable(spec: TaskSpec, module_name: str | None = None) -> Iterator[None]:
    """The task file's folder first on ``sys.path`` while the block runs (restored after).
    A module of that name found in the folder is imported afresh from it — not a same-named
    module another task (or an earlier version of the file) left in ``sys.modules``."""
    folder = str(spec.folder)
    top = (module_name or "").partition(".")[0]
    if top and ((spec.folder / f"{top}.py").is_file() or (spec.folder / top).is_dir()):
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.path.remove(folder)


def _load_weights(module: Any, spec: TaskSpec) -> None:
    from rtinfer._deps import require

    st = require("safetensors.torch", "Loading safetensors weights")
    path = spec.model.weights
    assert path is not None
    if not path.is_file():
        raise TaskError(f"{spec.file}: model.weights: no file at '{path}'")
    try:
        state = st.load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise TaskError(f"{spec.file}: model.weights: '{path.name}' is not a readable "
                        f"safetensors file ({exc})") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs module {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:5]}" if missing else "",
                 f"unexpected {unexpected[:5]}" if unexpected else "",
                 f"shapes differ: {shapes[:5]}" if shapes else ""]
        raise TaskError(f"{spec.file}: model.weights: '{path.name}' does not fit "
                        f"{spec.model.entry}(**{spec.model.kwargs}): "
                        + "; ".join(p for p in parts if p)
                        + ". Check the entry point's arguments (model.kwargs) and the file")
    module.load_state_dict(state, strict=True)


def forward_inputs(module: Any) -> list[str]:
    """The names ``module.forward`` takes (its model inputs, passed as keywords)."""
    params = inspect.signature(module.forward).parameters.values()
    names = [p.name for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.default is inspect.Parameter.empty]
    return names or [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD][:1]


def export_module(spec: TaskSpec, module: Any, example: Mapping[str, np.ndarray], *,
                  classifier: bool, text: bool) -> ImportedModel:
    """Export ``module`` (called with ``example`` as keywords) to ONNX, verified; outputs are
    named by ``model.outputs``, else a classifier's single output ``logits`` (what the
    agreement guard reads)."""
    import torch

    from rtinfer.models.imported import Source
    from rtinfer.models.torch_export import from_torch, state_hash

    feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in example.items()}
    with torch.no_grad():
        out = module(**feeds)
    single = isinstance(out, torch.Tensor) or (isinstance(out, tuple | list) and len(out) == 1)
    names = spec.model.outputs or (["logits"] if classifier and single else None)
    axes: dict[str, dict[int, str]] = {k: {1: "sequence"} for k in feeds} if text else {}
    for name, given in spec.model.dynamic_axes.items():
        axes[name] = {**axes.get(name, {}), **given}
    try:
        return from_torch(
            module, feeds, output_names=names, dynamic_axes=axes or None,
            source=Source("torch", f"{spec.model.entry} from task {spec.file.name}",
                          state_hash(module)))
    except RtinferError as exc:
        raise TaskError(f"{spec.file}: model.torch: exporting {spec.model.entry} to ONNX "
                        f"failed: {exc}") from None
    except ValueError as exc:  # output names or dynamic axes that do not fit the module
        field = "model.outputs" if "output_names" in str(exc) else "model.dynamic_axes"
        raise TaskError(f"{spec.file}: {field}: {exc}") from None
