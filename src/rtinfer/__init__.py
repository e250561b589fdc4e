"""rtinfer: a trained model in, a fast, verified, served model out.

    import rtinfer
    session = rtinfer.load("model.onnx", engine="openvino", threads=2)
    outputs = session.run({"x": x})

``import rtinfer`` is cheap: neither torch nor any engine (nor onnx) is imported until a
function that needs it is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rtinfer.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    EngineError,
    EngineUnavailableError,
    ExportError,
    ExportMismatchError,
    InvalidInputError,
    MissingExtraError,
    ModelLoadError,
    RtinferError,
    UnknownEngineError,
    UnsafePathError,
    UnsupportedModelError,
)
from rtinfer.spec import ModelSpec, TensorSpec

if TYPE_CHECKING:
    from rtinfer import kits, metrics, models, optimize
    from rtinfer.advisor import advise
    from rtinfer.bench.compare import compare_engines
    from rtinfer.bench.inprocess import bench_model
    from rtinfer.deploy.artifact import Artifact, load_artifact, save_artifact
    from rtinfer.engines import available_engines, engine_names, load
    from rtinfer.engines.base import Session
    from rtinfer.models import ImportedModel, import_model
    from rtinfer.models.summary import summarize
    from rtinfer.optimize import Distill, Prune, Quantize

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "ArtifactError",
    "ArtifactIntegrityError",
    "Distill",
    "EngineError",
    "EngineUnavailableError",
    "ExportError",
    "ExportMismatchError",
    "ImportedModel",
    "InvalidInputError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelSpec",
    "Prune",
    "Quantize",
    "RtinferError",
    "Session",
    "TensorSpec",
    "UnknownEngineError",
    "UnsafePathError",
    "UnsupportedModelError",
    "__version__",
    "advise",
    "available_engines",
    "bench_model",
    "compare_engines",
    "engine_names",
    "import_model",
    "kits",
    "load",
    "load_artifact",
    "metrics",
    "models",
    "optimize",
    "save_artifact",
    "summarize",
]

# Public names that live in modules we import only on first use (see the module docstring).
_LAZY = {
    "Artifact": "rtinfer.deploy.artifact",
    "Distill": "rtinfer.optimize",
    "Prune": "rtinfer.optimize",
    "Quantize": "rtinfer.optimize",
    "ImportedModel": "rtinfer.models",
    "Session": "rtinfer.engines.base",
    # In rtinfer.advisor, not rtinfer.advise: importing a submodule of that name would set
    # the package attribute to the module and shadow the function.
    "advise": "rtinfer.advisor",
    "available_engines": "rtinfer.engines",
    "bench_model": "rtinfer.bench.inprocess",
    "compare_engines": "rtinfer.bench.compare",
    "engine_names": "rtinfer.engines",
    "import_model": "rtinfer.models",
    "load": "rtinfer.engines",
    "load_artifact": "rtinfer.deploy.artifact",
    "save_artifact": "rtinfer.deploy.artifact",
    "summarize": "rtinfer.models.summary",
}


# Subpackages reachable as attributes (rtinfer.kits.load(...)) without importing them upfront.
_SUBMODULES = ("kits", "metrics", "models", "optimize")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"rtinfer.{name}")
        globals()[name] = module
        return module
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rtinfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
