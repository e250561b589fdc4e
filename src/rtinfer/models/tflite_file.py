"""Import a ``.tflite`` file: open it with LiteRT and read its spec from its signature.

    model = load_tflite("model_quantized.tflite")   # runs on engine="litert"

A ``.tflite`` model keeps its own form (no conversion): its spec is the signature's inputs and
outputs (``serving_default``, else the only signature), named by the signature's keys, with a
dimension the signature leaves free (``-1``) symbolic: ``batch`` on axis 0 of the inputs, and of
an output whose leading size follows the inputs' batch in a probe run (not a data-dependent
count). A file without a signature (an old converter's) is refused: rtinfer calls models
through one. Only the ``litert`` engine runs it; the ONNX engines run a model imported from
its TensorFlow source.
"""

from __future__ import annotations

import re
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
        interp = litert.Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()  # where a missing (Flex) op's kernel shows
        return interp
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        if "Flex" in text or "Select TensorFlow op" in text or "custom op" in text.lower():
            ops = sorted(set(re.findall(r"\bFlex\w+", text)))
            raise ModelLoadError(
                f"'{path}' needs TensorFlow ops (Flex: {', '.join(ops) or 'see the file'}) that "
                "the LiteRT runtime cannot run. Convert it with TFLITE_BUILTINS only (change "
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
    if key is None:
        found = sorted(interp.get_signature_list())
        raise ModelLoadError(
            f"'{path}' has " + (f"signatures {found} and none is '{SIGNATURE}'" if found else
                                "no signature") + "; rtinfer calls .tflite models through one: "
            "re-convert it with TFLiteConverter.from_saved_model or Keras' export")
    runner = interp.get_signature_runner(key)
    ins = tuple(_tensor(name, d, True) for name, d in runner.get_input_details().items())
    batched = _batched_outputs(runner, ins)
    outs = tuple(_tensor(name, d, name in batched)
                 for name, d in runner.get_output_details().items())
    return ImportedModel(
        path=path.resolve(), spec=ModelSpec(ins, outs),
        source=source or Source("tflite", str(path), sha256_file(path)), opset={})


def _batched_outputs(runner: Any, inputs: tuple[TensorSpec, ...]) -> set[str]:
    """Outputs whose leading size is the inputs' batch, by one run at batch 2 (zeros); none
    when the model cannot run at that size."""
    if not all(t.shape and t.shape[0] == "batch" for t in inputs):
        return set()
    feeds = {t.name: np.zeros(tuple(2 if i == 0 else (d if isinstance(d, int) else 1)
                                    for i, d in enumerate(t.shape)), t.dtype) for t in inputs}
    try:
        out = runner(**feeds)
    except Exception:  # a model that needs other sizes: no output is taken as batched
        return set()
    return {k for k, v in out.items() if np.ndim(v) and np.shape(v)[0] == 2}


def _tensor(name: str, detail: dict[str, Any], batch: bool) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape: list[Dim] = [("batch" if i == 0 and batch else None) if int(d) < 0 else int(d)
                        for i, d in enumerate(dims)]
    return TensorSpec(name, np.dtype(detail["dtype"]).name, tuple(shape))
