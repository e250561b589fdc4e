"""ONNX Runtime: the default engine for ONNX models (CPU; CUDA/TensorRT when present)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer.engines.base import Engine, runtime_message
from rtinfer.errors import EngineError, EngineUnavailableError, InvalidInputError
from rtinfer.models.imported import ImportedModel

__all__ = ["OnnxRuntimeEngine"]

# Tried in this order when no providers are named; the CPU provider is always last.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeEngine(Engine):
    """Options: ``providers`` (list of execution provider names), ``spin`` (bool: let idle
    intra-op threads spin-wait, ORT's default; turn off when several sessions share cores)."""

    name = "onnxruntime"

    def __init__(self, model: ImportedModel, threads: int, **options: Any) -> None:
        super().__init__(model, threads, **options)
        ort = require("onnxruntime", "The onnxruntime engine")
        available = ort.get_available_providers()
        providers = options.get("providers") or [p for p in _PREFERRED if p in available]
        missing = [p for p in providers if p not in available]
        if missing:
            raise EngineUnavailableError(
                f"execution provider(s) {missing} are not in this onnxruntime build; "
                f"available: {available}. Install onnxruntime-gpu for CUDA/TensorRT"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1  # sequential graph execution: all threads go to each op
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only; warnings about unused initializers are noise
        if not options.get("spin", True):
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(model.path), so, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            raise EngineError(
                f"onnxruntime could not load {model.path.name}: {runtime_message(exc)}. If an op "
                "is not implemented, try engine='openvino' or re-export with another opset"
            ) from exc
        self._outputs = [o.name for o in self._session.get_outputs()]
        # A failed run is raised with ORT's message; ORT's own log line would repeat it and
        # may quote input values (an index out of range), which must never reach a log.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        self._invalid_argument = ort.capi.onnxruntime_pybind11_state.InvalidArgument

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._outputs, feeds, self._run_options)
        except self._invalid_argument as exc:
            # Valid names, dtypes and shapes, but values the graph rejects: a token id past
            # the vocabulary, a length past the position table. The caller's mistake.
            raise InvalidInputError(
                f"the model rejected the input values: {runtime_message(exc)}") from exc
        except Exception as exc:
            raise EngineError(
                f"onnxruntime failed to run the model: {runtime_message(exc)}") from exc
        return dict(zip(self._outputs, values, strict=True))

    def close(self) -> None:
        # Drop the InferenceSession now (weights, arena) rather than whenever the last
        # reference to this engine goes: a server that retires a version frees its memory
        # before it trims the heap.
        self._session = None

    def effective_threads(self) -> int:
        return int(self._session.get_session_options().intra_op_num_threads)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": self._session.get_providers()}
