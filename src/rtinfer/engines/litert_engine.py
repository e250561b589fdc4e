"""LiteRT (TensorFlow Lite): runs ``.tflite`` files, XNNPACK on the CPU, no TensorFlow needed.

A model imported from Keras or a SavedModel runs here too: its TensorFlow form is converted
to a float32 ``.tflite`` once and cached by content (:func:`rtinfer.models.tensorflow_model.
tflite_of`, which needs ``rtinfer[tensorflow]``). Calls go through the model's signature, so
inputs and outputs carry the signature's names, and a batch of another size resizes the
interpreter's inputs (LiteRT re-plans its buffers then; a server batching to a few sizes pays
that only when the size changes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtinfer.engines.base import Engine
from rtinfer.errors import EngineError, EngineUnavailableError, InvalidInputError
from rtinfer.models.imported import ImportedModel

__all__ = ["LiteRtEngine"]


class LiteRtEngine(Engine):
    """No options. The thread budget is the interpreter's ``num_threads`` (XNNPACK's pool);
    LiteRT has no call that reads it back, so :meth:`effective_threads` is the number it was
    built with, and the engine contract test counts the threads that do the work."""

    name = "litert"
    formats = ("tflite", "onnx")  # ONNX only with a TensorFlow form to convert (_converted)

    def __init__(self, model: ImportedModel, threads: int, **options: Any) -> None:
        super().__init__(model, threads, **options)
        from rtinfer.models.tflite_file import interpreter, signature_key

        path = model.path if model.is_tflite else _converted(model)
        self.file = path
        self._interpreter = interpreter(path, threads)
        key = signature_key(self._interpreter)  # load_tflite refused files without one
        self._runner = self._interpreter.get_signature_runner(key)
        self._outputs = model.spec.output_names
        missing = set(self._outputs) - set(self._runner.get_output_details())
        if missing:
            raise EngineError(f"{path.name}'s signature lacks output(s) {sorted(missing)} of "
                              "the model's spec; re-import the model")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._runner(**feeds)
        except ValueError as exc:  # LiteRT's message for values or shapes its kernels reject
            raise InvalidInputError(f"the model rejected the input: {exc}") from exc
        except Exception as exc:
            raise EngineError(f"litert failed to run the model: {exc}") from exc
        return {name: out[name] for name in self._outputs}

    def close(self) -> None:
        self._runner = None
        self._interpreter = None

    def effective_threads(self) -> int:
        return self.threads


def _converted(model: ImportedModel) -> Any:
    if model.tensorflow is None:
        raise EngineUnavailableError(
            f"{model.source.description} has no TensorFlow form for LiteRT to run: litert "
            "runs .tflite files and models imported from Keras or a SavedModel; load this one "
            "with engine='onnxruntime' or 'openvino'")
    from rtinfer.models.tensorflow_model import tflite_of

    return tflite_of(model)
