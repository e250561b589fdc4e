"""OpenVINO: Intel's engine, compiled for this CPU, reading the ONNX file directly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from rtinfer._buckets import MASK, bucket_for, pad_sequence
from rtinfer._deps import require
from rtinfer.engines.base import Engine, runtime_message
from rtinfer.errors import EngineError
from rtinfer.models.imported import ImportedModel
from rtinfer.spec import ModelSpec

__all__ = ["DYNAMIC_GROUP_KEY", "LENGTH_BUCKETS_KEY", "PRECISION_KEY", "TEXT_LENGTH_BUCKETS",
           "LengthPlan", "OpenVinoEngine", "length_plan", "supports_bf16"]

# ONNX metadata key asking for run-time activation quantization per this many input channels
# (OpenVINO files ONNX metadata under the model's rt_info["framework"]).
DYNAMIC_GROUP_KEY = "rtinfer.openvino.dynamic_quantization_group_size"
# ONNX metadata key naming the inference precision a model was judged at (``bf16``), written by
# ``Quantize(method="bf16", engine="openvino")``: the file keeps its float32 weights.
PRECISION_KEY = "rtinfer.openvino.inference_precision"
# ONNX metadata key listing sequence lengths (``16,32,64``) to pad token inputs up to before
# each call. OpenVINO pays for every change of sequence length between calls, its bf16 and
# int8 kernels most: on MiniLM + head (2 threads, the intent kit's test sentences at their own
# 4-16 tokens, p50) bf16 ran 3.00 ms at the real lengths and 1.75 ms padded to 16; f32 3.20
# against 3.17 ms alone in a process.
LENGTH_BUCKETS_KEY = "rtinfer.openvino.length_buckets"
TEXT_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class LengthPlan:
    """How a text model's calls are padded to length buckets: the inputs that share the
    ``attention_mask``'s sequence axis (padded with zeros: masked out) and, per output, the axes
    that follow it (cut back to the real length)."""

    buckets: tuple[int, ...]
    inputs: tuple[str, ...]
    output_axes: dict[str, tuple[int, ...]]

    def pad(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int, int]:
        """``feeds`` with the sequence axis padded to its bucket, the real and padded length
        (equal past the largest bucket, or when an input is not of the mask's length)."""
        mask = feeds.get(MASK)
        if mask is None or mask.ndim != 2:
            return feeds, 0, 0
        length = mask.shape[1]
        width = bucket_for(length, self.buckets)
        rows = [feeds[n] for n in self.inputs if n in feeds]
        if width == length or any(v.ndim != 2 or v.shape[1] != length for v in rows):
            return feeds, length, length
        return pad_sequence(feeds, width, self.inputs), length, width

    def cut(self, outputs: dict[str, np.ndarray], length: int, width: int
            ) -> dict[str, np.ndarray]:
        """``outputs`` with the padded positions removed again."""
        if width == length:
            return outputs
        for name, axes in self.output_axes.items():
            if name in outputs and axes:
                index = tuple(slice(0, length) if a in axes else slice(None)
                              for a in range(outputs[name].ndim))
                outputs[name] = np.ascontiguousarray(outputs[name][index])
        return outputs


def length_plan(spec: ModelSpec, buckets: Sequence[int]) -> LengthPlan | None:
    """The padding plan for a model whose ``attention_mask`` is (batch, sequence) with a named
    sequence axis, or None when padding could not be undone safely: no such mask, the axis
    unnamed, another input carrying it at another rank, or an output with an unnamed dynamic
    axis (it might be the sequence)."""
    mask = next((t for t in spec.inputs if t.name == MASK), None)
    if mask is None or len(mask.shape) != 2 or not isinstance(mask.shape[1], str):
        return None
    symbol = mask.shape[1]
    inputs = []
    for t in spec.inputs:
        if symbol in t.shape[1:]:
            if len(t.shape) != 2 or t.shape[1] != symbol:
                return None
            inputs.append(t.name)
    axes = {}
    for t in spec.outputs:
        if any(d is None for d in t.shape[1:]):
            return None
        axes[t.name] = tuple(a for a, d in enumerate(t.shape) if a > 0 and d == symbol)
    return LengthPlan(tuple(sorted(int(b) for b in buckets)), tuple(inputs), axes)


class OpenVinoEngine(Engine):
    """Options: ``device`` (default ``"CPU"``), ``precision`` (default: the model's own
    setting, written by ``Quantize(method="bf16", engine="openvino")``, else ``"f32"``), ``hint``
    (``"LATENCY"`` or ``"THROUGHPUT"``, default ``"LATENCY"``), ``dynamic_group`` (run-time
    activation quantization group for int8-weight MatMuls; default: the model's own setting,
    written by ``Quantize(method="dynamic", engine="openvino")``, else OpenVINO's),
    ``length_buckets`` (sequence lengths to pad token inputs up to, e.g. ``(16, 32, 64)``;
    ``()`` for none; default: the model's own setting, written for text models by ``quantize``
    when it quantizes for OpenVINO (NNCF, run-time int8, bf16), else none). Padding needs an
    ``attention_mask`` input with a named sequence axis; outputs along that axis are cut back
    to the real length.

    The precision is pinned to f32 because OpenVINO otherwise picks bf16 on CPUs that report
    bf16 support (this machine's default hint reads bfloat16), which silently changes outputs;
    lower precision is an optimization to choose explicitly and evaluate.
    """

    name = "openvino"

    def __init__(self, model: ImportedModel, threads: int, **options: Any) -> None:
        super().__init__(model, threads, **options)
        ov = require("openvino", "The openvino engine")
        self._device = options.get("device", "CPU")
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": options.get("hint", "LATENCY"),
        }
        try:
            core = ov.Core()
            graph = core.read_model(str(model.path))
            config["INFERENCE_PRECISION_HINT"] = options.get(
                "precision", _model_setting(graph, PRECISION_KEY) or "f32")
            group = options.get("dynamic_group", _model_setting(graph, DYNAMIC_GROUP_KEY))
            if group is not None:
                config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(group)
            self._compiled = core.compile_model(graph, self._device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long traces
            raise EngineError(
                f"openvino could not compile {model.path.name} for {self._device}: "
                f"{runtime_message(exc)}. Try engine='onnxruntime'"
            ) from exc
        self._plan = self._length_plan(model, options.get(
            "length_buckets", _buckets(_model_setting(graph, LENGTH_BUCKETS_KEY))))
        self._request = self._compiled.create_infer_request()
        wanted = model.spec.output_names
        self._outputs = []
        for port in self._compiled.outputs:
            names = port.get_names()
            self._outputs.append(next((n for n in wanted if n in names), port.get_any_name()))

    @staticmethod
    def _length_plan(model: ImportedModel, buckets: Sequence[int] | None) -> LengthPlan | None:
        if not buckets:
            return None
        if any(int(b) < 1 for b in buckets):
            raise EngineError(f"length_buckets must be positive lengths, got {list(buckets)}")
        plan = length_plan(model.spec, buckets)
        if plan is None:
            raise EngineError(
                f"length_buckets needs an '{MASK}' input of shape (batch, sequence) whose "
                "sequence axis is named, and outputs with no unnamed dynamic axis (padding "
                f"must be undone); {model.path.name} has inputs "
                f"{[str(t) for t in model.spec.inputs]} and outputs "
                f"{[str(t) for t in model.spec.outputs]}")
        return plan

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        length = width = 0
        if self._plan is not None:
            feeds, length, width = self._plan.pad(feeds)
        try:
            # Read the caller's arrays where they lie: OpenVINO copies each input into its own
            # tensor otherwise (read-only, strided and other-dtype arrays are still copied or
            # converted). On the pruned int8 perception CNN at 3x224x224 the copy was a quarter
            # of the call: 0.59 -> 0.42 ms p50, 2 threads.
            result = self._request.infer(feeds, share_inputs=True)
        except Exception as exc:
            raise EngineError(f"openvino failed to run the model: {runtime_message(exc)}") from exc
        # The request reuses its output buffers on the next call: hand out copies.
        outputs = {name: np.array(result[port], copy=True)
                   for name, port in zip(self._outputs, self._compiled.outputs, strict=True)}
        return outputs if self._plan is None else self._plan.cut(outputs, length, width)

    def close(self) -> None:
        # As for ONNX Runtime: the compiled model's memory goes now, not at garbage collection.
        self._request = None
        self._compiled = None

    def effective_threads(self) -> int:
        return int(self._compiled.get_property("INFERENCE_NUM_THREADS"))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": self._device,
            "precision": _type_name(self._compiled.get_property("INFERENCE_PRECISION_HINT")),
            "streams": int(self._compiled.get_property("NUM_STREAMS")),
            "dynamic_group": int(self._compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")),
            "length_buckets": list(self._plan.buckets) if self._plan else [],
        }


def _model_setting(graph: Any, key: str) -> str | None:
    """The setting the model's ONNX metadata holds under ``key`` (OpenVINO files it under
    rt_info["framework"]), or None."""
    path = ["framework", key]
    if not graph.has_rt_info(path):
        return None
    return str(graph.get_rt_info(path).astype(str))


def _buckets(setting: str | None) -> tuple[int, ...] | None:
    """A ``LENGTH_BUCKETS_KEY`` setting (``"16,32,64"``) as lengths; None when absent."""
    if not setting:
        return None
    return tuple(int(b) for b in setting.split(",") if b.strip())


@cache
def supports_bf16(device: str = "CPU") -> bool:
    """Whether OpenVINO computes in bfloat16 on ``device`` natively (AVX-512 BF16 or AMX on
    Intel CPUs), by its own report (asked once); False when OpenVINO is not installed."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    except Exception:  # not installed, or no such device: no bf16 to offer
        return False


def _type_name(value: Any) -> str:
    """OpenVINO's element type as its short name (``f32``, ``bf16``)."""
    to_string = getattr(value, "to_string", None)
    return str(to_string()) if callable(to_string) else str(value)
