"""Optimization passes. Today: int8 quantization (post-training, ONNX Runtime or NNCF), judged
against the float model under an explicit budget, with sensitive layers kept in float."""

from rtinfer.optimize.budgeted import QuantizeResult, quantizable_nodes, quantize_within_budget
from rtinfer.optimize.evaluate import Budget, Evaluation, fidelity, kit_metric
from rtinfer.optimize.inspect_quant import FORMULA, quant_params
from rtinfer.optimize.quantize import Quantize, quantize

__all__ = ["FORMULA", "Budget", "Evaluation", "Quantize", "QuantizeResult", "fidelity",
           "kit_metric", "quant_params", "quantizable_nodes", "quantize",
           "quantize_within_budget"]
