"""Importers: every supported kind of model becomes an :class:`ImportedModel` (ONNX + spec).

    import_model("model.onnx")                       # checked with the ONNX checker
    import_model(net, example_inputs={"x": x})        # torch.nn.Module, export verified
    import_model("path/to/all-MiniLM-L6-v2")          # transformers folder, cached export
    import_model(clf, example_inputs=X[:64])          # scikit-learn / XGBoost
    import_model("repo/minilm/1")                     # an rtinfer artifact (hashes checked)
    import_model("model.keras") / (keras_model)       # Keras: tf2onnx export, verified
    import_model("tfserving/fraud/3")                 # a SavedModel folder (TF Serving's)
    import_model("model.tflite")                      # LiteRT's own form (engine="litert")

Pickle files are refused: unpickling runs arbitrary code, so a ``.pkl``/``.joblib`` file is
something the caller must choose to trust and load themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtinfer.errors import ModelLoadError, UnsupportedModelError
from rtinfer.models.builtin import minilm_folder
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.models.onnx_file import load_onnx
from rtinfer.models.tabular import from_tabular, is_tabular_model
from rtinfer.models.tensorflow_model import (
    KERAS_SUFFIXES,
    from_keras,
    from_saved_model,
    is_keras_model,
    is_saved_model,
)
from rtinfer.models.tflite_file import load_tflite
from rtinfer.models.torch_export import from_torch
from rtinfer.models.transformers_folder import (
    from_transformers,
    is_transformers_folder,
    tokenize,
)

__all__ = [
    "ImportedModel",
    "Source",
    "from_keras",
    "from_saved_model",
    "from_tabular",
    "from_torch",
    "from_transformers",
    "import_model",
    "load_onnx",
    "load_tflite",
    "minilm_folder",
    "tokenize",
]

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt"}


def import_model(model: Any, example_inputs: Any = None, **kwargs: Any) -> ImportedModel:
    """Bring ``model`` into rtinfer's common form; see the module docstring for the forms."""
    if isinstance(model, ImportedModel):
        return model
    if isinstance(model, (str, Path)):
        return _import_path(Path(model))
    if is_tabular_model(model):
        if example_inputs is None:
            raise ValueError(
                f"importing a {type(model).__name__} needs example_inputs: a few real rows "
                "(2-D float array) to fix the feature count and check the conversion"
            )
        return from_tabular(model, example_inputs, **kwargs)
    if is_keras_model(model):
        return from_keras(model, **kwargs)
    if type(model).__module__.startswith("torch.") or _is_torch_module(model):
        if example_inputs is None:
            raise ValueError(
                f"importing a torch {type(model).__name__} needs example_inputs: a dict of "
                "input name -> tensor (or a tuple of tensors) the model accepts"
            )
        return from_torch(model, example_inputs, **kwargs)
    raise UnsupportedModelError(
        f"cannot import a {type(model).__module__}.{type(model).__name__}; rtinfer imports ONNX "
        "files, artifacts, transformers folders, torch.nn.Module, scikit-learn and XGBoost "
        "models, Keras models and files, SavedModel folders and .tflite files"
    )


def _is_torch_module(obj: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")  # a torch module can only exist if torch is imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def _import_path(path: Path) -> ImportedModel:
    from rtinfer.deploy.artifact import is_artifact, is_model_folder, load_artifact

    if not path.exists():
        raise ModelLoadError(f"no model at '{path}'; check the path")
    if path.is_dir():
        if is_artifact(path) or is_model_folder(path):
            return load_artifact(path).model
        if is_transformers_folder(path):
            return from_transformers(path)
        if is_saved_model(path):
            return from_saved_model(path)
        versions = [p for p in path.iterdir()
                    if p.name.isascii() and p.name.isdigit() and is_saved_model(p)]
        if versions:  # a TF Serving model base path: its newest version
            return from_saved_model(max(versions, key=lambda p: int(p.name)))
        raise ModelLoadError(
            f"'{path}' is a folder but neither an rtinfer artifact (manifest.json), a model "
            "repository entry (numbered version folders), a transformers model (config.json "
            "+ weights) nor a TensorFlow SavedModel (saved_model.pb)"
        )
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UnsupportedModelError(
            f"'{path}' looks like a pickle-based file; rtinfer never unpickles files because "
            "that runs arbitrary code. If you trust it, load it yourself and pass the object "
            "(e.g. an nn.Module with example_inputs), or export it to ONNX"
        )
    if path.suffix.lower() in KERAS_SUFFIXES:
        return from_keras(path)
    if path.suffix.lower() == ".tflite":
        return load_tflite(path)
    return load_onnx(path)
