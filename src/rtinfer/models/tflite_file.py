"""Import a ``.tflite`` file: open it with LiteRT and read its spec from its signature.

    model = load_tflite("model_quantized.tflite")   # runs on engine="litert"

A ``.tflite`` model keeps its own form (no conversion): its spec is the signature's inputs and
outputs (``serving_default``, else the only signature), named by the signature's keys, with a
dimension the signature leaves free (``-1``) symbolic (``batch`` on axis 0). A file without a
signature (an old converter's) is described by the interpreter's tensors instead. Only the
``litert`` engine runs it; the ONNX engines run a model imported from its TensorFlow source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer._hashing import sha256_file
from rtinfer.errors import ModelLoadError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.spec import Dim, ModelSpec, TensorSpec

__all__ = ["SIGNATURE", "interpreter", "load_tflite", "signature_key"]

SIGNATURE = "serving_default"  # the signature TF Serving and Keras' export name


def interpreter(path: Path, threads: int | None = None) -> Any:
    """A LiteRT interpreter for ``path``; a file that is not a TFLite flatbuffer, or one whose
    ops this runtime lacks (TF "Flex" ops), raises :class:`ModelLoadError` saying which."""
    litert = require("ai_edge_litert.interpreter", "Running .tflite models")
    try:
        return litert.Interpreter(model_path=str(path), num_threads=threads)
    except ValueError as exc:
        text = str(exc)
        if "Flex" in text or "Select TensorFlow op" in text:
            raise ModelLoadError(
                f"'{path}' needs TensorFlow ops (Flex) that the LiteRT runtime cannot run: "
                f"{text.strip().splitlines()[0]}. Convert it with TFLITE_BUILTINS only (change "
                "the layers that need TF ops), or serve its ONNX form on onnxruntime") from exc
        raise ModelLoadError(
            f"'{path}' is not a readable .tflite model ({text.strip().splitlines()[0]}); the file "
            "may be truncated or not a TFLite flatbuffer: re-convert it") from exc


def signature_key(interp: Any) -> str | None:
    """The signature a model is called through: ``serving_default``, else its only one."""
    names = list(interp.get_signature_list())
    if SIGNATURE in names:
        return SIGNATURE
    return names[0] if len(names) == 1 else None


def load_tflite(path: str | Path, *, source: Source | None = None) -> ImportedModel:
    """Open and describe ``path``; see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no .tflite file at '{path}'; check the path")
    interp = interpreter(path, threads=1)
    key = signature_key(interp)
    if key is None and interp.get_signature_list():
        raise ModelLoadError(
            f"'{path}' has signatures {sorted(interp.get_signature_list())} and none is "
            f"'{SIGNATURE}'; re-convert it with one serving signature")
    if key is not None:
        runner = interp.get_signature_runner(key)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        ins = [_tensor(name, d) for name, d in inputs.items()]
        outs = [_tensor(name, d) for name, d in outputs.items()]
    else:
        ins = [_tensor(d["name"], d) for d in interp.get_input_details()]
        outs = [_tensor(d["name"], d) for d in interp.get_output_details()]
    return ImportedModel(
        path=path.resolve(), spec=ModelSpec(tuple(ins), tuple(outs)),
        source=source or Source("tflite", str(path), sha256_file(path)), opset={})


def _tensor(name: str, detail: dict[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape: list[Dim] = [("batch" if i == 0 else None) if int(d) < 0 else int(d)
                        for i, d in enumerate(dims)]
    return TensorSpec(name, np.dtype(detail["dtype"]).name, tuple(shape))
