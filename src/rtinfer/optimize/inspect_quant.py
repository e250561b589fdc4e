"""What quantization did to each tensor, in the terms of the project's formula.

The seed defines n-bit quantization as

    Q(x) = round((x - x_min) / (x_max - x_min) * (2^n - 1))

Runtimes store the same mapping as a scale s and a zero point z on a signed or unsigned grid
[q_min, q_max] (int8: [-128, 127], uint8: [0, 255]):

    q = clamp(round(x / s) + z, q_min, q_max)        x_hat = s * (q - z)

With x_min = s * (q_min - z) and x_max = s * (q_max - z), so that x_max - x_min = s * (2^n - 1),
(x - x_min) / s = x / s + z - q_min, hence Q(x) = q - q_min: the same code shifted onto [0, 2^n-1].
*Symmetric* quantization (int8 weights, z = 0) centres the range on zero: x_min = -128 s,
x_max = 127 s. *Asymmetric* (uint8 activations) lets z move the range to fit the data. Rounding
costs at most |s|/2 for any x inside [x_min, x_max].

NNCF's weight compression (``Quantize(method="dynamic", engine="openvino")``) stores *signed*
scales: s = w_peak / -128, with w_peak the channel's largest-magnitude weight, so that weight
lands exactly on q = -128 whatever its sign. For s < 0 the grid is mirrored: x_min = s (q_max -
z) and x_max = s (q_min - z); the table shows the range in increasing order either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer.models.imported import ImportedModel

__all__ = ["FORMULA", "quant_params"]

FORMULA = ("Q(x) = round((x - x_min) / (x_max - x_min) * (2^n - 1)); runtime form "
           "q = clamp(round(x / s) + z, q_min, q_max), x_hat = s * (q - z), with "
           "x_min = s * (q_min - z), x_max = s * (q_max - z), so Q(x) = q - q_min")

# Grids by stored type; int32 holds biases, with s = s_input * s_weight and z = 0.
_GRID = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
         np.dtype(np.int32): (-(2**31), 2**31 - 1)}


def quant_params(model: ImportedModel) -> list[dict[str, Any]]:
    """One row per DequantizeLinear: the tensor, whether it is a weight, n, s, z, x_min, x_max.

    Per-channel parameters are summarised (min/max over channels) with the channel axis.
    """
    onnx = require("onnx", "Inspecting quantized models")
    from onnx import numpy_helper

    graph = onnx.load(str(model.path)).graph
    inits = {i.name: i for i in graph.initializer}
    rows = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 2:
            continue
        x_name, s_name = node.input[0], node.input[1]
        z_name = node.input[2] if len(node.input) > 2 else ""
        if s_name not in inits:
            continue
        scale = numpy_helper.to_array(inits[s_name]).astype(np.float64)
        zp_arr = numpy_helper.to_array(inits[z_name]) if z_name in inits else None
        is_weight = x_name in inits
        dtype = (numpy_helper.to_array(inits[x_name]).dtype if is_weight
                 else zp_arr.dtype if zp_arr is not None else np.dtype(np.uint8))
        if dtype not in _GRID:
            continue
        qmin, qmax = _GRID[dtype]
        zp = (zp_arr if zp_arr is not None else np.zeros_like(scale)).astype(np.float64)
        low, high = scale * (qmin - zp), scale * (qmax - zp)  # swapped where s < 0
        x_min, x_max = np.minimum(low, high), np.maximum(low, high)
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        rows.append({
            "tensor": x_name,
            "kind": "weight" if is_weight else "activation",
            "dtype": str(dtype),
            "n": 8 * dtype.itemsize,
            "per_channel": bool(scale.size > 1),
            "axis": axis if scale.size > 1 else None,
            "scale": _summary(scale),
            "zero_point": _summary(zp),
            "x_min": _summary(x_min),
            "x_max": _summary(x_max),
            "form": ("asymmetric" if np.any(zp) or dtype.kind != "i" else
                     "symmetric, signed scale" if np.any(scale < 0) else "symmetric"),
        })
    return rows


def _summary(a: np.ndarray) -> float | dict[str, float]:
    if a.size == 1:
        return float(a.reshape(()))
    return {"min": float(a.min()), "max": float(a.max())}
