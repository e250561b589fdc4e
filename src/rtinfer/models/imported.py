"""The common form every importer produces: a model file on disk plus its spec and provenance.

The file is ONNX, which every engine but LiteRT runs, or, for a model that came as one, a
``.tflite`` file, which only LiteRT runs."""

from __future__ import annotations

import shutil
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtinfer.spec import ModelSpec

__all__ = ["ImportedModel", "Source"]


@dataclass(frozen=True)
class Source:
    """Where a model came from: ``kind`` is onnx, torch, transformers, sklearn, xgboost, keras,
    saved_model or tflite."""

    kind: str
    description: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "description": self.description, "sha256": self.sha256}


@dataclass
class ImportedModel:
    """A model in rtinfer's common form.

    ``path`` is an ONNX file every engine but LiteRT can run, or a ``.tflite`` file only LiteRT
    runs (:attr:`is_tflite`). ``torch_module`` is kept when the model came from PyTorch, so the
    PyTorch engine can run the original rather than a conversion; ``tensorflow`` (a SavedModel
    folder) when it came from Keras or TensorFlow, so LiteRT and TFLite's quantizer work from
    the original. ``export_check`` records how closely the ONNX export matched the source, per
    output.
    """

    path: Path
    spec: ModelSpec
    source: Source
    opset: dict[str, int]
    torch_module: Any = None
    torch_loader: Callable[[], Any] | None = field(default=None, repr=False)
    torch_kwargs: bool = True  # call the module as module(**inputs), else module(*inputs)
    export_check: dict[str, Any] = field(default_factory=dict)
    tensorflow: Path | None = None  # the SavedModel folder of a Keras / TensorFlow model

    @property
    def is_tflite(self) -> bool:
        """The file is a ``.tflite`` flatbuffer (LiteRT's), not ONNX."""
        return self.path.suffix.lower() == ".tflite"

    @property
    def format(self) -> str:
        """``tflite`` or ``onnx``: what an engine must run (``Engine.formats``)."""
        return "tflite" if self.is_tflite else "onnx"

    def own_folder(self, folder: Path) -> None:
        """Delete ``folder`` (a temporary export) when this model object is garbage collected."""
        weakref.finalize(self, shutil.rmtree, folder, True)

    def load_torch(self) -> Any:
        """The source PyTorch module, loading it on first use; ``None`` if there is none."""
        if self.torch_module is None and self.torch_loader is not None:
            self.torch_module = self.torch_loader()
        return self.torch_module

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the ONNX file and any external-data files beside it."""
        return sum(p.stat().st_size for p in _model_files(self.path))

    @property
    def files(self) -> list[Path]:
        return _model_files(self.path)


def _model_files(path: Path) -> list[Path]:
    """The model file plus, for ONNX, the external-data files it references."""
    files = [path]
    if path.suffix.lower() == ".tflite":
        return files
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    locations = set()
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                locations.add(entry.value)
    files += [path.parent / loc for loc in sorted(locations)]
    return files
