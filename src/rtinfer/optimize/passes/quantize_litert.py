"""TFLite's post-training quantization, from the model's TensorFlow form, for LiteRT.

The settings are the TFLite converter's own, so a Keras user's snippet and rtinfer's pass
make the same file::

    converter.optimizations = [tf.lite.Optimize.DEFAULT]            # method="dynamic"
    + converter.representative_dataset = calibration split           # method="static":
    + target_spec.supported_ops = [TFLITE_BUILTINS_INT8]             #   int8 kernels throughout
    + target_spec.supported_types = [tf.float16]                     # method="float16"
    no optimizations                                                 # method="float32"

Dynamic range stores weights as int8 and quantizes activations per call; full integer
calibrates every activation's range on ``calib_samples`` rows and runs int8 kernels end to end
(inputs and outputs stay float: LiteRT quantizes and dequantizes at the edges); float16 halves
the weights and computes in float32 on x86; float32 is the plain conversion (the float model
as LiteRT runs it, judged like any variant). The model needs its TensorFlow form
(:attr:`ImportedModel.tensorflow`: imported from Keras or a SavedModel).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtinfer.errors import ExportError
from rtinfer.models.imported import ImportedModel

if TYPE_CHECKING:
    from rtinfer.optimize.passes.quantize import Quantize

__all__ = ["quantize_litert"]


def quantize_litert(model: ImportedModel, config: Quantize,
                    calibration: Mapping[str, np.ndarray] | None, path: Path) -> Path:
    """Write ``model`` quantized as ``config`` says to ``path`` (a ``.tflite`` file)."""
    if model.tensorflow is None:
        raise ExportError(
            f"{model.source.description} has no TensorFlow form: LiteRT quantization converts "
            "Keras and SavedModel models (import the Keras file or SavedModel folder); for an "
            "ONNX or PyTorch model use engine='onnxruntime' or 'openvino'")
    from rtinfer.models.tensorflow_model import convert_tflite

    def configure(converter: Any) -> None:
        import tensorflow as tf

        if config.method == "float32":
            return
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if config.method == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif config.method == "static":
            converter.representative_dataset = _samples(calibration or {},
                                                        config.calib_samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not config.per_channel:
            converter._experimental_disable_per_channel = True

    return convert_tflite(model.tensorflow, path, configure)


def _samples(feeds: Mapping[str, np.ndarray], limit: int) -> Any:
    """TFLite's ``representative_dataset``: one row at a time, by the signature's input names."""
    n = min(limit, len(next(iter(feeds.values()))))

    def rows() -> Iterator[dict[str, np.ndarray]]:
        for i in range(n):
            yield {k: np.ascontiguousarray(v[i:i + 1]) for k, v in feeds.items()}

    return rows
