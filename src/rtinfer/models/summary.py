"""What is inside a model: spec, parameters, size, op histogram, opsets and FLOPs per sample.

FLOPs are counted for the ops that carry almost all the arithmetic of the networks rtinfer
targets — MatMul, Gemm, Conv, ConvTranspose — at 2 FLOP per multiply-accumulate, on shapes
that ONNX shape inference derives from concrete input sizes. For MiniLM at 128 tokens that is
6 layers x 128 tokens x (4·384² + 2·384·1536) MAC for the projections plus 2·128²·384 MAC per
layer for attention: about 2.9 GFLOP. Element-wise ops, normalisations and tree ensembles are
not counted (they are memory-bound, not FLOP-bound); the summary says how many nodes were.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rtinfer._deps import require
from rtinfer._sandbox import sandbox
from rtinfer.models.imported import ImportedModel

__all__ = ["count_flops", "summarize"]

_COUNTED = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "QLinearMatMul",
            "QLinearConv")


def summarize(model: ImportedModel, dims: Mapping[str, int] | None = None,
              shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """A JSON-ready description of ``model``; FLOPs are per sample at batch 1, at ``shapes``
    and ``dims`` (see :func:`count_flops`). A ``.tflite`` model is described by LiteRT's op
    list; its FLOPs are not counted (the count reads ONNX graphs)."""
    if model.is_tflite:
        return _summarize_tflite(model)
    onnx = require("onnx", "Inspecting ONNX models")
    proto = onnx.load(str(model.path), load_external_data=False)
    params = sum(math.prod(init.dims) for init in proto.graph.initializer)
    params += sum(_constant_elements(node) for node in proto.graph.node)
    params += sum(_ml_attribute_elements(node) for node in proto.graph.node)
    flops = count_flops(model, dims, shapes=shapes)
    return {
        "source": model.source.to_dict(),
        "path": str(model.path),
        "size_bytes": model.size_bytes,
        "opset": model.opset,
        "inputs": [t.to_dict() for t in model.spec.inputs],
        "outputs": [t.to_dict() for t in model.spec.outputs],
        "parameters": int(params),
        "nodes": len(proto.graph.node),
        "op_histogram": dict(Counter(n.op_type for n in proto.graph.node).most_common()),
        "flops": flops,
    }


def _summarize_tflite(model: ImportedModel) -> dict[str, Any]:
    from rtinfer.models.tflite_file import interpreter

    ops = [op["op_name"] for op in interpreter(model.path)._get_ops_details()]
    return {
        "source": model.source.to_dict(), "path": str(model.path),
        "size_bytes": model.size_bytes, "opset": {}, "format": "tflite",
        "inputs": [t.to_dict() for t in model.spec.inputs],
        "outputs": [t.to_dict() for t in model.spec.outputs],
        "parameters": None, "nodes": len(ops),
        "op_histogram": dict(Counter(ops).most_common()), "flops": None,
    }


def count_flops(model: ImportedModel, dims: Mapping[str, int] | None = None,
                batch: int = 1, shapes: Mapping[str, Sequence[int]] | None = None,
                ) -> dict[str, Any]:
    """FLOPs of one inference at ``batch``, ``shapes`` (input -> whole shape, as ``--shape
    x=1,3,48,320`` gives it: its symbols size the inputs that share them) and ``dims`` (symbol
    -> size); free dims take 1. A symbolic first axis (``batch``, ``N``) takes ``batch``.

    Shapes are inferred at a batch of at least 2 and the count scaled back: shape inference
    trips over size-1 axes that exporters broadcast (MiniLM with a head: 49 MatMuls unresolved
    at batch 1, none at 2), and every counted op's work is linear in the batch.
    """
    onnx = require("onnx", "Counting FLOPs")
    proto = onnx.load(str(model.path), load_external_data=False)
    batched, _ = model.spec.batch_axis()
    # A model without a batch axis is counted as it is: one inference, one sample.
    infer_batch = max(batch, 2) if batched else 1
    feed_shapes = _feed_shapes(model, dims or {}, shapes or {}, infer_batch)
    graph = proto.graph
    # Drop the exporter's symbolic shapes so inference recomputes them from concrete inputs.
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    for inp in graph.input:
        if inp.name in feed_shapes and inp.type.HasField("tensor_type"):
            shape = inp.type.tensor_type.shape
            shape.ClearField("dim")
            for size in feed_shapes[inp.name]:
                shape.dim.add().dim_value = size
    inferred = _infer_shapes(onnx, proto).graph
    known: dict[str, list[int] | None] = {}  # tensor -> inferred shape (None: not concrete)
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            d = [x.dim_value if x.HasField("dim_value") else -1
                 for x in vi.type.tensor_type.shape.dim]
            known[vi.name] = d if all(v >= 0 for v in d) else None
    for init in inferred.initializer:
        known[init.name] = list(init.dims)

    total, per_op, unresolved = 0, Counter[str](), 0
    for node in inferred.node:
        if node.op_type not in _COUNTED:
            continue
        f = _node_flops(node, known)
        if f is None:
            unresolved += 1
            continue
        total += f
        per_op[node.op_type] += f
    per_sample = total // infer_batch
    scale = batch if batched else 1
    shapes_at_batch = {k: [batch, *v[1:]] if v and batched else list(v)
                       for k, v in feed_shapes.items()}
    return {
        "total": int(per_sample * scale),
        "per_sample": int(per_sample),
        "input_shapes": shapes_at_batch,
        "by_op": {op: int(f // infer_batch * scale) for op, f in per_op.items()},
        "counted_ops": list(_COUNTED),
        "unresolved_nodes": unresolved,
    }


def _feed_shapes(model: ImportedModel, dims: Mapping[str, int],
                 shapes: Mapping[str, Sequence[int]], batch: int) -> dict[str, list[int]]:
    """Each input's concrete shape at ``batch``: as ``shapes`` gives it, else its symbols
    sized by ``shapes`` and ``dims`` (checked: one size per symbol), free dims 1."""
    given = model.spec.check_shapes(shapes, dims)
    sizes = dict(dims)
    for t in model.spec.inputs:
        for d, size in zip(t.shape, given.get(t.name, ()), strict=False):
            if isinstance(d, str):
                sizes.setdefault(d, size)
    batched, symbol = model.spec.batch_axis()
    if batched and symbol is not None:  # the batch axis wins over dims and shapes
        sizes[symbol] = batch
    out = {}
    for t in model.spec.inputs:
        shape = list(given.get(t.name) or t.concrete_shape(sizes, default=1))
        if batched:
            shape[0] = batch
        out[t.name] = shape
    return out


def _infer_shapes(onnx: Any, proto: Any) -> Any:
    """ONNX Runtime's symbolic shape inference, which follows Shape/Reshape/Range chains that
    exporters emit (ONNX's own inference loses the batch and head axes of exported
    transformers); ONNX's inference is the fallback when the symbolic one fails."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with sandbox():  # it may leave sym_shape_infer_temp.onnx in the working directory
            return SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    except Exception:  # the symbolic engine raises bare Exceptions on ops it does not know
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)


def _node_flops(node: Any, shapes: Mapping[str, list[int] | None]) -> int | None:
    def shape(i: int, outputs: bool = False) -> list[int] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    out = shape(0, outputs=True)
    a = shape(0)
    if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        if out is None or a is None:
            return None
        k = a[-1]
        return 2 * math.prod(out) * k
    if node.op_type == "Gemm":
        if out is None or a is None:
            return None
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return 2 * math.prod(out) * k
    if node.op_type in ("Conv", "QLinearConv"):
        w = shape(3 if node.op_type == "QLinearConv" else 1)
        if out is None or w is None:
            return None
        # w: (C_out, C_in/group, kH, kW): each output element is C_in/group·kH·kW MACs.
        return 2 * math.prod(out) * math.prod(w[1:])
    if node.op_type == "ConvTranspose":
        w = shape(1)
        if a is None or w is None:
            return None
        # w: (C_in, C_out/group, kH, kW): each input element feeds C_out/group·kH·kW MACs.
        return 2 * math.prod(a) * math.prod(w[1:])
    return None


def _constant_elements(node: Any) -> int:
    if node.op_type != "Constant":
        return 0
    return sum(math.prod(a.t.dims) for a in node.attribute if a.name == "value")


def _ml_attribute_elements(node: Any) -> int:
    """Tree ensembles and linear classifiers keep their parameters in attributes."""
    if node.domain != "ai.onnx.ml":
        return 0
    return sum(len(a.floats) + len(a.ints) for a in node.attribute
               if a.name.endswith(("values", "weights", "coefficients", "intercepts")))
