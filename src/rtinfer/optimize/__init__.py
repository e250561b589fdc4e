"""Optimization passes: int8 quantization (post-training, ONNX Runtime or NNCF) judged against
the float model under an explicit budget, with sensitive layers kept in float; pruning
(unstructured magnitude, or structured removal of channels, FFN neurons and heads) and
distillation into a smaller student, each evaluated against the original on held-out data;
and the search over all of them, which the package itself runs when called::

    result = rtinfer.optimize(kit="intent", max_drop="1pt", out="repo")   # search.optimize
"""

import sys
import types
from typing import Any

from rtinfer.optimize._torch_job import TorchResult
from rtinfer.optimize.budgeted import QuantizeResult, quantizable_nodes, quantize_within_budget
from rtinfer.optimize.evaluate import Budget, Evaluation, fidelity, kit_metric
from rtinfer.optimize.inspect_quant import FORMULA, quant_params
from rtinfer.optimize.passes.distill import Distill, derive_student, distill
from rtinfer.optimize.passes.prune import Prune, prune, prune_weights, sparsity_report
from rtinfer.optimize.passes.quantize import Quantize, quantize

__all__ = ["FORMULA", "Budget", "Distill", "Evaluation", "Prune", "Quantize", "QuantizeResult",
           "TorchResult", "derive_student", "distill", "fidelity", "kit_metric", "prune",
           "prune_weights", "quant_params", "quantizable_nodes", "quantize",
           "quantize_within_budget", "sparsity_report"]


class _Callable(types.ModuleType):
    """Lets ``rtinfer.optimize(...)`` run the search while ``rtinfer.optimize.Quantize`` etc.
    stay importable from the same name."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from rtinfer.optimize.search import optimize

        return optimize(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
