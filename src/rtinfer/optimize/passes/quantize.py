"""Post-training int8 quantization: calibrate on representative data, quantize, return ONNX.

    q = quantize(model, Quantize(method="static", per_channel=True), calibration=feeds)
    q = quantize(model, Quantize(method="dynamic"))                        # no data needed
    q = quantize(model, Quantize(engine="openvino", preset="transformer"), calibration=feeds)
    q = quantize(model, Quantize(method="dynamic", engine="openvino"))    # no data needed
    q = quantize(model, Quantize(method="bf16", engine="openvino"))       # AMX / AVX-512 BF16
    q = quantize(keras_model, Quantize(method="static", engine="litert"), calibration=feeds)

``engine`` names whose quantizer does the work: ``onnxruntime`` (ONNX Runtime's quantization
tool: static QDQ with MinMax/Entropy/Percentile calibration, or dynamic) or ``openvino`` (NNCF
on the ONNX graph, with its transformer preset when asked). Either way the result is a QDQ (or
integer-op) ONNX file that both ONNX Runtime and OpenVINO run as int8. ``litert`` is TFLite's
converter on the model's TensorFlow form (:mod:`rtinfer.optimize.passes.quantize_litert`:
``dynamic`` range, ``static`` full integer, or ``float16``); its result is a ``.tflite`` file
for LiteRT.

``method="dynamic", engine="openvino"`` is different in kind: NNCF stores the MatMul/Gemm
weights as int8 (symmetric, one scale per output channel, a DequantizeLinear each) and
OpenVINO's CPU plugin quantizes each activation row *at run time*, per group of
``dynamic_group`` input channels, before its int8 (VNNI) kernel. No calibration, so no range
can be wrong for an unseen input: on the intent kit every held-out sentence kept an embedding
cosine >= 0.997 (static int8: 0.82-0.98). The group size travels in the file's metadata
(:data:`DYNAMIC_GROUP_KEY`), which rtinfer's OpenVINO engine reads; ONNX Runtime runs the same
file correctly but in float (dequantized weights), so such a model is deployed on OpenVINO.

``method="bf16", engine="openvino"`` changes no weight: the file is the model as given, marked
(:data:`PRECISION_KEY`) for OpenVINO to run in bfloat16 where the CPU has AVX-512 BF16 or AMX
(8 mantissa bits: on MiniLM at 128 tokens 3.5-3.9x ONNX Runtime fp32 at embedding cosine
0.99999 on this machine's AMX). Other engines run the file in float32.

Models exported at an opset older than 13 (common from older tools) are upgraded to opset 13
with ONNX's version converter before quantizing: per-channel QuantizeLinear/DequantizeLinear
needs the ``axis`` attribute that opset 13 introduced, and ONNX Runtime would otherwise write a
graph the ONNX checker rejects. A model the converter cannot upgrade raises
:class:`~rtinfer.errors.ExportError` saying so, with per-tensor as the way out.

Calibration statistics are computed once per (model, data, method) and cached on disk
(ONNX Runtime's ``calibration_cache_path``), so trying per-channel against per-tensor, or
keeping different layers in float, does not recalibrate.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._cache import cache_dir
from rtinfer._deps import require
from rtinfer._sandbox import sandbox
from rtinfer.engines.openvino_engine import (
    DYNAMIC_GROUP_KEY,
    LENGTH_BUCKETS_KEY,
    PRECISION_KEY,
    TEXT_LENGTH_BUCKETS,
    length_plan,
)
from rtinfer.errors import ExportError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.models.onnx_file import load_onnx
from rtinfer.models.tflite_file import load_tflite

__all__ = ["CONFIG_VERSION", "DYNAMIC_GROUP_KEY", "QDQ_OPSET", "Feeds", "Quantize", "as_feeds",
           "batches", "quantize"]

CONFIG_VERSION = 1
Feeds = Mapping[str, np.ndarray]

_METHODS = ("static", "dynamic", "float16", "float32", "bf16")
_ENGINES = ("onnxruntime", "openvino", "litert")
_CALIBRATIONS = ("minmax", "entropy", "percentile")
_PRESETS = ("default", "transformer")
# The ops whose weights carry the arithmetic. Quantizing only these (op_types="compute") with
# asymmetric uint8 activations is the default: on MiniLM, ONNX Runtime's defaults (int8
# symmetric activations, every op) dropped held-out intent accuracy from 0.968 to 0.61, while
# this setting kept it (measured; REFERENCE.md section 1 reports the same collapse).
QUANTIZABLE_OPS = ("Conv", "MatMul", "Gemm")
# Per-channel Quantize/DequantizeLinear (the ``axis`` attribute) arrived in opset 13.
QDQ_OPSET = 13


@dataclass(frozen=True)
class Quantize:
    """One quantization setting; a pass in a recipe (round-trips through :meth:`to_dict`)."""

    method: str = "static"
    engine: str = "onnxruntime"
    calibration: str = "minmax"
    calib_samples: int = 128
    per_channel: bool = True
    preset: str = "default"
    activation_type: str = "uint8"
    op_types: str = "compute"
    exclude: tuple[str, ...] = field(default=())
    # ONNX Runtime also quantizes the *outputs* of MatMul/Gemm (for its integer-output kernels)
    # and feeds the rounded tensor to every consumer: on MiniLM every projection (before its
    # bias) and the residual stream (after each LayerNorm) go through uint8. True rounds only
    # where an int8 kernel reads: inputs of the quantized ops (as NNCF places its quantizers).
    compute_inputs_only: bool = False
    # method="dynamic" on OpenVINO: activations are quantized at run time per this many input
    # channels. On the intent kit (2 threads, 128 tokens, quiet machine, 7 interleaved rounds)
    # 128 ran 2.32x ORT fp32 with worst held-out cosine 0.997; 32 (OpenVINO's default) 2.02x,
    # 64 2.05x, 256 1.95x (cosine 0.998, 0.998, 0.995).
    dynamic_group: int = 128
    # NNCF's (fast) bias correction shifts each quantized layer's bias to undo the mean error
    # int8 adds. Usually a gain; on the perception kit's pruned CNN, fine-tuned from the
    # original, it cost 2 of 180 validation digits and 6 points on shifted, dimmed scans
    # (0.908 -> 0.847), where without it the int8 model kept both (1.000, 0.905).
    bias_correction: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (("method", self.method, _METHODS),
                                     ("engine", self.engine, _ENGINES),
                                     ("calibration", self.calibration, _CALIBRATIONS),
                                     ("preset", self.preset, _PRESETS),
                                     ("activation_type", self.activation_type, ("uint8", "int8")),
                                     ("op_types", self.op_types, ("compute", "all"))):
            if value not in allowed:
                raise ValueError(f"Quantize.{name} must be one of {allowed}, got {value!r}")
        if self.calib_samples < 1:
            raise ValueError(f"Quantize.calib_samples must be >= 1, got {self.calib_samples}")
        if self.dynamic_group < 1:
            raise ValueError(f"Quantize.dynamic_group must be >= 1, got {self.dynamic_group}")
        if self.method == "dynamic" and self.engine == "openvino" and not self.per_channel:
            raise ValueError("OpenVINO's dynamic int8 stores weights per output channel; "
                             "per_channel=False is not available there (use "
                             "engine='onnxruntime' for per-tensor dynamic int8)")
        if self.method == "bf16" and self.engine != "openvino":
            raise ValueError("method='bf16' is OpenVINO's bfloat16 inference (engine="
                             "'openvino'), on CPUs with AVX-512 BF16 or AMX")
        if self.method in ("float16", "float32") and self.engine != "litert":
            raise ValueError(f"method='{self.method}' is TFLite's (engine='litert'); ONNX "
                             "Runtime and OpenVINO quantize to int8")
        if self.engine == "litert" and (self.calibration != "minmax" or self.exclude
                                        or self.preset != "default"):
            raise ValueError("engine='litert' takes TFLite's own settings: method, per_channel "
                             "and calib_samples (no other calibration, preset or exclude)")
        if not self.bias_correction and (self.engine != "openvino" or self.method != "static"):
            raise ValueError("bias_correction=False is a setting of NNCF's static int8 "
                             "(engine='openvino', method='static'); the other quantizers "
                             "apply none")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def runtime(self) -> str:
        """The engine that judges and deploys the result: OpenVINO for NNCF's results (its
        quantizer, and the only runtime of its run-time activation quantization), else ONNX
        Runtime; LiteRT for TFLite's."""
        return self.engine if self.engine in ("openvino", "litert") else "onnxruntime"

    @property
    def kind(self) -> str:
        """What the result computes in: ``int8``, or the float type the method chose (``bf16``
        on OpenVINO, ``float16`` / ``float32`` on LiteRT)."""
        return "int8" if self.method in ("static", "dynamic") else self.method

    @property
    def int8_engines(self) -> tuple[str, ...]:
        """The engines that run the result as int8: QDQ runs on both; OpenVINO's run-time
        activation quantization only there (ONNX Runtime runs that file in float)."""
        if self.engine == "litert":
            return ("litert",)
        if self.engine == "openvino" and self.method in ("dynamic", "bf16"):
            return ("openvino",)
        return ("onnxruntime", "openvino")

    def to_dict(self) -> dict[str, Any]:
        return {"pass": "quantize", "version": CONFIG_VERSION, **asdict(self),
                "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quantize:
        if data.get("pass") != "quantize" or data.get("version") != CONFIG_VERSION:
            raise ValueError(f"not a version-{CONFIG_VERSION} quantize pass: {dict(data)}")
        fields = {k: v for k, v in data.items() if k not in ("pass", "version")}
        fields["exclude"] = tuple(fields.get("exclude", ()))
        return cls(**fields)

    def describe(self) -> str:
        if self.engine == "litert":
            gran = "" if self.per_channel else ", per-tensor"
            return {"dynamic": f"int8 dynamic range (TFLite{gran}, LiteRT)",
                    "static": f"int8 full integer (TFLite{gran}, {self.calib_samples} "
                              "calibration samples, LiteRT)",
                    "float16": "float16 weights (TFLite, LiteRT)",
                    "float32": "float32, converted (TFLite, LiteRT)"}[self.method]
        if self.method == "bf16":
            return "bfloat16 inference, float32 weights kept (OpenVINO)"
        if self.method == "dynamic" and self.engine == "openvino":
            extra = f", {len(self.exclude)} layer(s) in float" if self.exclude else ""
            return (f"int8 weights + activations quantized at run time per {self.dynamic_group} "
                    f"channels (OpenVINO{extra})")
        if self.method == "dynamic":
            return "int8 dynamic (ONNX Runtime)"
        tool = "NNCF" if self.engine == "openvino" else "ONNX Runtime"
        gran = "per-channel" if self.per_channel else "per-tensor"
        extra = f", {len(self.exclude)} layer(s) in float" if self.exclude else ""
        preset = f", {self.preset} preset" if self.preset != "default" else ""
        if self.op_types == "all" or self.activation_type == "int8":
            preset += f", {self.activation_type} activations, {self.op_types} ops"
        if self.compute_inputs_only:
            preset += ", int8 only at compute inputs"
        if not self.bias_correction:
            preset += ", no bias correction"
        return f"int8 static QDQ ({tool}, {gran}, {self.calibration}{preset}{extra})"


def as_feeds(data: Feeds | Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Representative data as one dict of arrays (leading axis: samples): a dict of arrays is
    taken as is; an iterable (a list, a generator, a DataLoader-like object) of such dicts,
    each a batch, is concatenated."""
    if isinstance(data, Mapping):
        return {k: np.asarray(v) for k, v in data.items()}
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise TypeError(f"representative data must be a dict of arrays or an iterable of such "
                        f"dicts (batches), got {type(data).__name__}")
    parts: dict[str, list[np.ndarray]] = {}
    for i, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise TypeError(f"item {i} of the representative data is a {type(item).__name__}; "
                            "each item must be a dict of input name -> array (one batch)")
        if parts and set(item) != set(parts):
            raise ValueError(f"item {i} has inputs {sorted(item)}; earlier items had "
                             f"{sorted(parts)}")
        for k, v in item.items():
            parts.setdefault(k, []).append(np.asarray(v))
    if not parts:
        raise ValueError("the representative data is empty: give at least one batch")
    try:
        return {k: np.concatenate(v) for k, v in parts.items()}
    except ValueError as exc:
        raise ValueError(f"the batches do not stack along their first axis ({exc}); give "
                         "arrays whose shapes agree after the batch axis") from exc


def batches(feeds: Feeds, batch: int = 1, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Split feeds (arrays with a leading sample axis) into a list of batches."""
    n = len(next(iter(feeds.values())))
    n = min(n, limit) if limit else n
    return [{k: np.ascontiguousarray(v[i:i + batch]) for k, v in feeds.items()}
            for i in range(0, n, batch)]


def quantize(model: ImportedModel, config: Quantize,
             calibration: Feeds | Iterable[Mapping[str, np.ndarray]] | None = None,
             *, out_dir: str | Path | None = None) -> ImportedModel:
    """Quantize ``model`` as ``config`` says; static methods need ``calibration`` feeds (a dict
    of arrays, or an iterable of such batches: :func:`as_feeds`)."""
    if config.method == "static" and calibration is None:
        raise ValueError(
            "static quantization needs calibration data: representative inputs (a kit's "
            "calibration split, an .npz file or a dict of arrays); or use method='dynamic'"
        )
    if calibration is not None:
        calibration = as_feeds(calibration)
    owned = out_dir is None
    # Absolute: the quantizers run with another working directory (rtinfer._sandbox).
    folder = Path(tempfile.mkdtemp(prefix="rtinfer-quant-") if out_dir is None
                  else out_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("model.tflite" if config.engine == "litert" else "model.onnx")
    with sandbox():
        if config.engine == "litert":
            from rtinfer.optimize.passes.quantize_litert import quantize_litert

            quantize_litert(model, config, calibration, path)
        elif config.engine == "openvino" and config.method == "bf16":
            _bf16(model.path, path, _text_marks(model))
        elif config.engine == "openvino" and config.method == "dynamic":
            _nncf_weights(upgraded(model), config, path, _text_marks(model))
        elif config.engine == "openvino":
            _nncf(upgraded(model), config, calibration or {}, path, _text_marks(model))
        else:
            pre = preprocessed(model)
            if config.method == "dynamic":
                _ort_dynamic(pre, config, path)
            else:
                _ort_static(model, pre, config, calibration or {}, path)
    result = (load_tflite if config.engine == "litert" else load_onnx)(path, source=Source(
        "tflite" if config.engine == "litert" else "onnx",
        f"{config.describe()} of {model.source.description}", _file_hash(path)))
    if owned:
        result.own_folder(folder)
    result.torch_loader = None
    return result


def upgraded(model: ImportedModel) -> Path:
    """The model's file at opset >= 13 (itself when it already is; else converted once and
    cached by file hash): ``ai.onnx`` opset 11 becomes 13, its ops rewritten where their
    definition changed (e.g. Split, Squeeze take axes as inputs)."""
    version = model.opset.get("ai.onnx", model.opset.get("", QDQ_OPSET))
    if version >= QDQ_OPSET:
        return model.path
    onnx = require("onnx", "Quantization")
    out = cache_dir() / "quant" / f"{_file_hash(model.path)[:16]}-opset{QDQ_OPSET}.onnx"
    if not out.is_file():
        from onnx import version_converter

        try:
            converted = version_converter.convert_version(onnx.load(str(model.path)),
                                                          QDQ_OPSET)
            onnx.checker.check_model(converted)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"{model.source.description} uses opset {version}; int8 QDQ needs opset "
                f"{QDQ_OPSET} (per-channel scales), and ONNX's version converter could not "
                f"upgrade it: {first}. Re-export the model at opset {QDQ_OPSET} or newer"
            ) from exc
        _write_atomically(out, converted.SerializeToString())
    return out


def preprocessed(model: ImportedModel) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference, graph optimisation), once
    per model: cached by the model's file hash, since it costs seconds on a transformer."""
    ort_q = require("onnxruntime.quantization", "Quantization")
    # The name says the opset: files cached before the upgrade existed may hold old opsets.
    out = cache_dir() / "quant" / f"{_file_hash(model.path)[:16]}-pre{QDQ_OPSET}.onnx"
    if not out.is_file():
        source = upgraded(model)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
        with sandbox():
            try:
                ort_q.quant_pre_process(str(source), str(tmp), skip_symbolic_shape=False)
            except Exception:  # symbolic shape inference fails on some transformer exports
                ort_q.quant_pre_process(str(source), str(tmp), skip_symbolic_shape=True)
        tmp.rename(out)
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    Path(name).rename(path)


def seven_bit_weights() -> bool:
    """True on an x86 CPU without VNNI (AVX2 only, e.g. AMD Zen 3): there the u8 x s8 int8
    kernels of ONNX Runtime and OpenVINO multiply with ``vpmaddubsw``, whose 16-bit pair sums
    saturate when both activations and weights are large; weights kept to 7 bits (-64..63)
    cannot overflow. Measured on the perception kit on such a CPU: 8-bit weights 0.944 top-1
    (ONNX Runtime) and 0.983 (OpenVINO) against 1.000 in float; 7-bit weights 1.000 on both.
    CPUs with AVX-512 VNNI or AVX-VNNI, and Arm, use all 8 bits."""
    from rtinfer.hardware import cpu_info

    cpu = cpu_info()
    x86 = cpu.arch.lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and not (cpu.has("avx512_vnni") or cpu.has("avx_vnni") or cpu.has("amx_int8"))


def _ort_static(model: ImportedModel, pre: Path, config: Quantize, calibration: Feeds,
                path: Path) -> None:
    q = require("onnxruntime.quantization", "Quantization")
    data = batches(calibration, batch=1, limit=config.calib_samples)
    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[config.calibration]
    # The ranges cover the tensors this op selection quantizes: the key must say which.
    key = _calibration_key(pre, data, f"{config.calibration}/{config.op_types}/"
                                      f"{config.activation_type}/{config.compute_inputs_only}")
    cache = cache_dir() / "quant" / f"{key}.calib"
    try:
        q.quantize_static(
            str(pre), str(path), _Reader(data), quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=(list(QUANTIZABLE_OPS) if config.op_types == "compute"
                                  else None),
            per_channel=config.per_channel,
            activation_type=(q.QuantType.QUInt8 if config.activation_type == "uint8"
                             else q.QuantType.QInt8),
            weight_type=q.QuantType.QInt8, reduce_range=seven_bit_weights(),
            nodes_to_exclude=list(config.exclude), calibrate_method=method,
            calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": config.activation_type == "int8",
                           "WeightSymmetric": True,
                           # A MatMul's weight is (in, out): one scale per output column.
                           "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                           "OpTypesToExcludeOutputQuantization": (
                               ["MatMul", "Gemm"] if config.compute_inputs_only else []),
                           # ... and a Relu folded into a quantizer would vanish from the float
                           # path that the rewired consumers read: keep it.
                           "QDQKeepRemovableActivations": config.compute_inputs_only},
        )
    except Exception as exc:
        raise ExportError(f"ONNX Runtime could not quantize {model.source.description}: "
                          f"{exc}") from exc
    if config.compute_inputs_only:
        _float_for_float_consumers(path)


def _float_for_float_consumers(path: Path) -> None:
    """Rewire every op that is not quantized (Add, LayerNorm, …) to read the float tensor
    rather than its QuantizeLinear → DequantizeLinear copy; drop pairs nobody reads."""
    onnx = require("onnx", "Quantization")
    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rounded: dict[str, str] = {}  # DequantizeLinear output -> the float tensor it copies
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in producer:
            q = producer[node.input[0]]
            if q.op_type == "QuantizeLinear":
                rounded[node.output[0]] = q.input[0]
    keep = set(QUANTIZABLE_OPS) | {"QuantizeLinear"}
    for node in graph.node:
        if node.op_type not in keep:
            for i, name in enumerate(node.input):
                if name in rounded:
                    node.input[i] = rounded[name]
    outputs = {o.name for o in graph.output}
    while True:  # remove Q/DQ nodes whose outputs no longer have readers
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    onnx.save(model, str(path))


def _ort_dynamic(pre: Path, config: Quantize, path: Path) -> None:
    q = require("onnxruntime.quantization", "Quantization")
    q.quantize_dynamic(str(pre), str(path), op_types_to_quantize=["MatMul", "Gemm"],
                       per_channel=config.per_channel, weight_type=q.QuantType.QInt8,
                       reduce_range=seven_bit_weights(), nodes_to_exclude=list(config.exclude))


def _nncf(source: Path, config: Quantize, calibration: Feeds, path: Path,
          marks: Mapping[str, str]) -> None:
    nncf = require("nncf", "Quantization with OpenVINO's NNCF")
    onnx = require("onnx", "Quantization")
    data = batches(calibration, batch=1, limit=config.calib_samples)
    kwargs: dict[str, Any] = {"subset_size": len(data)}
    if config.preset == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if config.exclude:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(config.exclude))
    if not config.bias_correction:
        kwargs["advanced_parameters"] = nncf.quantization.advanced_parameters \
            .AdvancedQuantizationParameters(disable_bias_correction=True)
    quantized = nncf.quantize(onnx.load(str(source)), nncf.Dataset(data), **kwargs)
    _save_marked(quantized, marks, path)


def _bf16(source: Path, path: Path, marks: Mapping[str, str]) -> None:
    """The model as it is, marked for bfloat16 inference (``PRECISION_KEY``): OpenVINO then
    runs its matrix products and convolutions in bf16 (AMX / AVX-512 BF16), the weights
    converted when the model is compiled."""
    onnx = require("onnx", "Quantization")
    _save_marked(onnx.load(str(source)), {PRECISION_KEY: "bf16", **marks}, path)


def _text_marks(model: ImportedModel) -> dict[str, str]:
    """For a text model (an ``attention_mask`` with a named sequence axis) quantized for
    OpenVINO: pad token inputs to length buckets (``LENGTH_BUCKETS_KEY``), as OpenVINO pays for
    each change of length between calls. On the intent kit at its real lengths (4-16 tokens,
    2 threads, p50) int8 weights with run-time activations ran 2.76 ms as they came and 2.12
    ms padded; bf16 3.00 and 1.75 ms. Other engines ignore the mark."""
    if length_plan(model.spec, TEXT_LENGTH_BUCKETS) is None:
        return {}
    return {LENGTH_BUCKETS_KEY: ",".join(map(str, TEXT_LENGTH_BUCKETS))}


def _nncf_weights(source: Path, config: Quantize, path: Path,
                  marks: Mapping[str, str]) -> None:
    nncf = require("nncf", "Quantization with OpenVINO's NNCF")
    onnx = require("onnx", "Quantization")
    # Embedding tables (Gather) stay float: a lookup gains nothing from int8 arithmetic.
    ignored = nncf.IgnoredScope(names=list(config.exclude), types=["Gather"], validate=False)
    try:
        compressed = nncf.compress_weights(onnx.load(str(source)),
                                           mode=nncf.CompressWeightsMode.INT8_SYM,
                                           ignored_scope=ignored)
    except Exception as exc:
        raise ExportError(f"NNCF could not compress the weights of {source.name}: {exc}") \
            from exc
    if not any(n.op_type == "DequantizeLinear" for n in compressed.graph.node):
        raise ExportError(f"{source.name} has no MatMul/Gemm weights for OpenVINO's dynamic "
                          "int8; use method='static'")
    _save_marked(compressed, {DYNAMIC_GROUP_KEY: str(config.dynamic_group), **marks}, path)


def _save_marked(graph: Any, marks: Mapping[str, str], path: Path) -> None:
    """Save an ONNX model with ``marks`` in its metadata: settings rtinfer's OpenVINO engine
    reads when it compiles the file."""
    onnx = require("onnx", "Quantization")
    for key, value in marks.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, data: Sequence[dict[str, np.ndarray]]) -> None:
        self._data = list(data)
        self._it = iter(self._data)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._data)


def _calibration_key(pre: Path, data: Sequence[Mapping[str, np.ndarray]], method: str) -> str:
    digest = hashlib.sha256(_file_hash(pre).encode() + method.encode())
    for feeds in data:
        for k in sorted(feeds):
            digest.update(k.encode())
            digest.update(np.ascontiguousarray(feeds[k]).tobytes())
    return digest.hexdigest()[:24]


def _file_hash(path: Path) -> str:
    from rtinfer._hashing import sha256_file

    return sha256_file(path)
