"""The model variants ``optimize`` considers, and how each is built from the original.

A *variant* is a model file plus the recipe that produced it (a list of pass dicts, replayable);
a *candidate* is a variant on one engine with one thread/batch setting. Variants are built in
order of cost, cheapest first, so a tight time budget still sees the most likely winners:

1. ``fp32``           the original, as given
2. ``int8-dynamic``   ONNX Runtime dynamic quantization (weights int8, activations quantized on
                      the fly; no calibration) — only for MatMul/Gemm-heavy models, since
                      ONNX Runtime has no fast dynamic Conv kernel (ConvInteger)
3. ``int8-static``    ONNX Runtime static QDQ, per-channel weights, MinMax calibration (and,
                      for attention models, the same rounding activations only where an int8
                      kernel reads them: the residual stream stays float)
4. ``int8-nncf``      NNCF on the ONNX graph (OpenVINO's quantizer), default preset, and its
                      transformer preset for models with attention (Softmax + MatMul)
4a. ``int8-nncf-nobc`` the same without bias correction, when the default broke the budget
                      (models without attention)
4b. ``int8-ov-dynamic`` int8 weights (NNCF) with activations quantized at run time by
                      OpenVINO, per group of 128 channels — MatMul/Gemm models; runs on
                      OpenVINO only (ONNX Runtime would run the file in float)
4c. ``bf16-ov``        the model as it is, run by OpenVINO in bfloat16 — only where OpenVINO
                      reports native BF16 (AVX-512 BF16 / AMX); no calibration
4d. ``litert-*``     TFLite's float32, dynamic range, full integer and float16 conversions
                      of the model's TensorFlow form, run on LiteRT — Keras and SavedModel
                      models only
5. ``int8-mixed``     the best static setting with its most sensitive layers kept in float
                      until the budget holds (:func:`quantize_within_budget`); built only when
                      no plain variant within budget was faster than the original

Torch-side passes (distillation, structured pruning) produce new float models that then go
through the same list; they are added by :func:`torch_variants` when the passes are available
and the kit has a torch model with training data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from rtinfer.engines.openvino_engine import supports_bf16
from rtinfer.models.imported import ImportedModel
from rtinfer.optimize.passes.quantize import Feeds, Quantize, quantize

__all__ = ["Variant", "mostly_dense", "op_histogram", "quantized_variants", "torch_variants"]


@dataclass
class Variant:
    """A model file with the recipe that made it; ``parent`` names the float model it came
    from (``fp32`` for the original)."""

    id: str
    label: str
    recipe: list[dict[str, Any]]
    model: ImportedModel
    quantized: bool
    parent: str = "fp32"
    notes: list[str] = field(default_factory=list)

    def quantize_passes(self) -> list[Quantize]:
        return [Quantize.from_dict(p) for p in self.recipe if p.get("pass") == "quantize"]

    @property
    def runtime(self) -> str:
        """Where its accuracy is judged: the engine of its quantize pass (ONNX Runtime for a
        float model)."""
        return next((q.runtime for q in self.quantize_passes()), "onnxruntime")

    def engines(self, available: list[str]) -> list[str]:
        """Engines to time it on: QDQ int8 runs on ONNX Runtime and OpenVINO, a ``.tflite``
        variant on LiteRT (the float model on LiteRT is its own variant, ``litert-fp32``,
        judged there); the original float model also on PyTorch eager when its module is
        known."""
        names: list[str] = [e for e in ("onnxruntime", "openvino", "litert")
                            if e in available and self._runs_on(e)]
        if self.id == "fp32" and "torch" in available and (
                self.model.torch_module is not None or self.model.torch_loader is not None):
            names.append("torch")
        return names

    def _runs_on(self, engine: str) -> bool:
        if self.model.is_tflite or engine == "litert":
            return self.model.is_tflite and engine == "litert"
        return all(engine in q.int8_engines for q in self.quantize_passes())


def op_histogram(model: ImportedModel) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(model.path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def mostly_dense(ops: dict[str, int]) -> bool:
    """Whether a model's arithmetic (its op histogram) is mostly MatMul/Gemm: what dynamic
    int8 covers (ONNX Runtime has no fast dynamic Conv; OpenVINO's run-time activation
    quantization covers fully connected layers)."""
    dense = ops.get("MatMul", 0) + ops.get("Gemm", 0)
    return dense > 0 and dense >= ops.get("Conv", 0)


def quantized_variants(
    base: ImportedModel, calibration: Feeds, *, prefix: str = "", parent: str = "fp32",
    base_recipe: list[dict[str, Any]] | None = None, engines: list[str],
    refused: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, str, Callable[[], Variant]]]:
    """(id, label, build) for each int8 variant of ``base``, cheapest first; ``build`` runs
    the quantizer only when called, so the search can skip what its time budget excludes.

    ``refused(id)`` says whether a variant already yielded broke the budget: when NNCF's
    default setting did on a model without attention, the same without bias correction follows
    (cheap on CNNs and MLPs; see :attr:`Quantize.bias_correction`)."""
    ops = op_histogram(base)
    dense = mostly_dense(ops)
    attention = ops.get("Softmax", 0) > 0 and ops.get("MatMul", 0) > 0
    configs: list[tuple[str, str, Quantize]] = []
    if dense:
        configs.append(("int8-dynamic", "int8 dynamic (ONNX Runtime)",
                        Quantize(method="dynamic")))
    configs.append(("int8-static", "int8 static per-channel (ONNX Runtime, MinMax)",
                    Quantize()))
    if attention:  # transformers: round activations only where an int8 kernel reads them
        configs.append(("int8-static-kernel-inputs",
                        "int8 static, kernel inputs only (ONNX Runtime, MinMax)",
                        Quantize(compute_inputs_only=True)))
    if "openvino" in engines:
        configs.append(("int8-nncf", "int8 (NNCF, default preset)", Quantize(engine="openvino")))
        if attention:
            configs.append(("int8-nncf-transformer", "int8 (NNCF, transformer preset)",
                            Quantize(engine="openvino", preset="transformer")))
        if dense:
            configs.append(("int8-ov-dynamic", "int8 weights, run-time activations (OpenVINO)",
                            Quantize(method="dynamic", engine="openvino")))
        if supports_bf16():
            configs.append(("bf16-ov", "bfloat16 (OpenVINO)",
                            Quantize(method="bf16", engine="openvino")))
    if base.tensorflow is not None and "litert" in engines:  # TFLite's own, from the TF form
        configs += [("litert-fp32", "float32 (LiteRT)",
                     Quantize(method="float32", engine="litert")),
                    ("litert-dynamic", "int8 dynamic range (LiteRT)",
                     Quantize(method="dynamic", engine="litert")),
                    ("litert-int8", "int8 full integer (LiteRT)", Quantize(engine="litert")),
                    ("litert-fp16", "float16 weights (LiteRT)",
                     Quantize(method="float16", engine="litert"))]
    def build(config: Quantize, vid: str, label: str) -> Variant:
        model = quantize(base, config, calibration if config.method == "static" else None)
        return Variant(prefix + vid, (prefix + " " if prefix else "") + label,
                       [*(base_recipe or []), config.to_dict()], model,
                       config.method != "float32", parent)

    for vid, label, config in configs:
        yield prefix + vid, label, partial(build, config, vid, label)
        if vid == "int8-nncf" and not attention and refused and refused(prefix + vid):
            plain = replace(config, bias_correction=False)
            yield (prefix + "int8-nncf-nobc", "int8 (NNCF, no bias correction)",
                   partial(build, plain, "int8-nncf-nobc", "int8 (NNCF, no bias correction)"))


def torch_variants(kit: Any, original: ImportedModel, *, seconds: float,
                   progress: Any) -> Iterator[tuple[str, str, Callable[[], Variant]]]:
    """(id, label, build) for the smaller float models a kit's or task's torch model can
    become: a student with half the transformer layers and half the FFN neurons
    (distillation) for attention models; half the channels removed (structured pruning,
    fine-tuned between two steps) for CNNs; for fully connected networks (MLPs) both, a
    student with half the hidden neurons distilled from the original and the original with
    half its hidden neurons pruned. Nothing when torch or the pruning library is missing, or
    the model has no torch form or the kit no training split."""
    import importlib.util

    if kit is None or (original.torch_loader is None and original.torch_module is None):
        return
    if "train" not in getattr(kit, "split_names", []):
        return
    ops = op_histogram(original)
    pruning = importlib.util.find_spec("torch_pruning") is not None
    if not (ops.get("Softmax", 0) and ops.get("MatMul", 0)) and not ops.get("Conv", 0) \
            and mostly_dense(ops) and pruning:
        yield from _mlp_variants(kit, seconds=seconds, progress=progress)
        return
    if ops.get("Softmax", 0) and ops.get("MatMul", 0):
        from rtinfer.optimize.passes.distill import Distill, distill

        # Half the layers and half the FFN neurons: on the intent kit this student lost 0.36
        # points of held-out accuracy at 3.14x the teacher's speed after 120 + 40 steps; half
        # the layers alone reached 2.42x (0.22 points) in the same run — at 11 tokens the
        # embeddings and per-call costs it keeps weigh a lot (benchmarks/prune_distill.py).
        # A small training split needs fewer steps: at most 10 passes over it (224 sentences:
        # 70 steps), at least 60.
        batches = -(-len(kit.split("train")) // 32)
        steps = min(240, max(60, 10 * batches))
        # Rare classes drawn by the square root of their share: on the intent-zh kit (40
        # intents, 9 to 4,461 sentences each) this raised the student's held-out macro-F1
        # from 0.895 to 0.903 and its hand-written accuracy from 0.86 to 0.90 (240 + 60 steps).
        classes = getattr(getattr(kit, "recipe", None), "task", "") in ("binary", "multiclass")
        config = Distill(width=0.5, steps=steps, finetune_steps=steps // 4,
                         max_seconds=seconds, balance=0.5 if classes else 0.0)
        label = "distilled student (half the layers, half the FFN)"

        def build_distilled() -> Variant:
            res = distill(kit=kit, config=config, measure=False, progress=progress)
            return Variant("distilled", label, res.report["recipe"], res.model, False)
        yield "distilled", label, build_distilled
    elif ops.get("Conv", 0) and pruning:
        from rtinfer.optimize.passes.prune import Prune, prune

        pconfig = Prune(structured=True, amount=0.5, scope="layer", steps=2,
                        finetune_steps=100, lr=2e-3, max_seconds=seconds)

        def build_pruned() -> Variant:
            res = prune(kit=kit, config=pconfig, measure=False, progress=progress)
            return Variant("pruned", "structured pruning (half the channels)",
                           res.report["recipe"], res.model, False)
        yield "pruned", "structured pruning (half the channels)", build_pruned


def _mlp_variants(kit: Any, *, seconds: float,
                  progress: Any) -> Iterator[tuple[str, str, Callable[[], Variant]]]:
    """Distilled and pruned forms of a fully connected network, each with half the time."""
    from rtinfer.optimize.passes.distill import Distill, distill
    from rtinfer.optimize.passes.prune import Prune, prune

    # Small networks train fast: a higher learning rate than a pretrained transformer's.
    dconfig = Distill(layers=1.0, width=0.5, steps=400, finetune_steps=100, lr=1e-3,
                      batch_size=64, max_seconds=seconds / 2)
    dlabel = "distilled student (half the hidden neurons)"

    def build_distilled() -> Variant:
        res = distill(kit=kit, config=dconfig, measure=False, progress=progress)
        return Variant("distilled", dlabel, res.report["recipe"], res.model, False)
    yield "distilled", dlabel, build_distilled

    pconfig = Prune(structured=True, amount=0.5, scope="layer", steps=2, finetune_steps=150,
                    lr=1e-3, max_seconds=seconds / 2)
    plabel = "structured pruning (half the hidden neurons)"

    def build_pruned() -> Variant:
        res = prune(kit=kit, config=pconfig, measure=False, progress=progress)
        return Variant("pruned", plabel, res.report["recipe"], res.model, False)
    yield "pruned", plabel, build_pruned
