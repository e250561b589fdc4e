"""Judge an optimized model against the original: task metric, fidelity, and the budget.

Fidelity compares each output of the candidate with the float model's on the same inputs:
per-sample cosine (worst and mean), SQNR in dB (10·log10 of signal power over error power) and,
for outputs with a class axis, top-1 agreement. The task metric comes from a kit (or a user
function) when labels exist. A :class:`Budget` says how much of the chosen metric may be lost,
absolute (points: ``0.5pt`` of accuracy is 0.005) or relative (``1%`` of the float value).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtinfer.engines.base import run_in_batches as run_batches

__all__ = ["NO_LABELS", "Budget", "Evaluation", "evaluate_candidate", "fidelity", "kit_metric",
           "ranked_by_disagreement", "run_batches", "user_metric"]

Metric = Callable[[np.ndarray, Mapping[str, np.ndarray]], dict[str, float]]


@dataclass(frozen=True)
class Budget:
    """How much of ``metric`` may be lost: ``Budget.parse("0.5pt", "accuracy")``."""

    max_drop: float
    kind: str  # "absolute" (in points, 1 point = 0.01) or "relative" (fraction of float)
    metric: str

    @classmethod
    def parse(cls, text: str, metric: str) -> Budget:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(pt|points?|%)\s*", text)
        if not m:
            raise ValueError(
                f"--max-drop {text!r} must say absolute or relative: e.g. '0.5pt' (half a point "
                "of the metric, i.e. 0.005 of accuracy) or '1%' (1% of the float model's value)"
            )
        value, unit = float(m.group(1)), m.group(2)
        if unit == "%":
            return cls(value / 100, "relative", metric)
        return cls(value / 100, "absolute", metric)

    def allowed_drop(self, float_value: float) -> float:
        return self.max_drop * abs(float_value) if self.kind == "relative" else self.max_drop

    def describe(self) -> str:
        if self.kind == "relative":
            return f"{self.metric} may drop by at most {self.max_drop:.2%} of the float value"
        return f"{self.metric} may drop by at most {self.max_drop * 100:g} point(s)"


@dataclass
class Evaluation:
    metrics: dict[str, float]          # task metrics (empty without labels)
    fidelity: dict[str, dict[str, float]]
    drop: float                        # float value minus candidate value of the budget metric
    within_budget: bool

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "fidelity": self.fidelity, "drop": self.drop,
                "within_budget": self.within_budget}


def fidelity(reference: Mapping[str, np.ndarray],
             candidate: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: worst and mean per-sample cosine, SQNR (dB), top-1 agreement if classes."""
    out: dict[str, dict[str, float]] = {}
    for name, ref in reference.items():
        if ref.dtype.kind != "f":
            continue
        got = candidate[name].astype(np.float64)
        r = ref.astype(np.float64)
        r2, g2 = r.reshape(len(r), -1), got.reshape(len(got), -1)      # (N, D)
        cos = np.sum(r2 * g2, 1) / np.maximum(
            np.linalg.norm(r2, axis=1) * np.linalg.norm(g2, axis=1), 1e-12)
        noise = np.sum((r - got) ** 2)
        row = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
               "sqnr_db": float(10 * np.log10(np.sum(r ** 2) / noise)) if noise else
               float("inf")}
        if r.ndim == 2 and r.shape[1] > 1:
            row["top1_agreement"] = float(np.mean(r.argmax(1) == got.argmax(1)))
        out[name] = row
    return out


def evaluate_candidate(
    candidate: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    budget: Budget,
    *,
    targets: np.ndarray | None = None,
    metric: Metric | None = None,
    float_metrics: Mapping[str, float] | None = None,
) -> Evaluation:
    """Judge ``candidate`` outputs against the float ``reference`` outputs under ``budget``.

    The budget applies to a task metric when ``budget.metric`` names one (needs ``targets`` and
    ``metric``), else to a fidelity figure named ``<output>.<figure>`` (e.g.
    ``sentence_embedding.cosine`` = the worst per-sample cosine) or, for the plain names
    ``cosine`` and ``top1``, to the first output's.
    """
    fid = fidelity(reference, candidate)
    metrics: dict[str, float] = {}
    base: dict[str, float] = {}
    if targets is not None and metric is not None:
        metrics = metric(targets, candidate)
        base = dict(float_metrics or metric(targets, reference))
    if budget.metric in metrics:
        value, float_value = metrics[budget.metric], base[budget.metric]
    else:
        if "sqnr" in budget.metric:
            raise ValueError("SQNR has no float value to drop from; budget a cosine or top1 "
                             "figure instead (SQNR is reported alongside)")
        value = _fidelity_value(fid, budget.metric)
        float_value = 1.0  # the float model agrees with itself perfectly
    drop = float_value - value
    return Evaluation(metrics=metrics, fidelity=fid, drop=float(drop),
                      within_budget=bool(drop <= budget.allowed_drop(float_value) + 1e-12))


_ALIASES = {"cosine": "cosine_min", "top1": "top1_agreement", "sqnr": "sqnr_db"}


def _fidelity_value(fid: Mapping[str, Mapping[str, float]], name: str) -> float:
    output, _, figure = name.rpartition(".")
    figure = _ALIASES.get(figure, figure)
    if not output:
        output = next(iter(fid))
    if output not in fid or figure not in fid[output]:
        raise ValueError(f"unknown fidelity metric {name!r}; outputs and figures: "
                         f"{ {k: sorted(v) for k, v in fid.items()} }")
    return float(fid[output][figure])


def kit_metric(kit: Any) -> Metric:
    def metric(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return dict(kit.recipe.evaluate(kit.meta, targets, outputs))

    return metric


# Stands for "no labels" where a metric runs anyway (a user metric): it gets None.
NO_LABELS = np.empty(0)


def user_metric(spec: str) -> tuple[str, Metric]:
    """``"package.module:function"`` → (its name, a Metric). The function is called as
    ``function(targets, outputs)`` — ``targets`` the labels or None, ``outputs`` a dict of
    output name -> array — and returns a number (higher is better) or a dict of numbers; the
    budget applies to the entry named like the function, else to the first."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a user metric is 'package.module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load the metric {spec!r}: {exc}; check that the module is "
                         "importable (on PYTHONPATH) and defines that function") from exc
    if not callable(fn):
        raise TypeError(f"{spec!r} is a {type(fn).__name__}, not a function")

    def metric(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        value = fn(None if targets is NO_LABELS else targets, dict(outputs))
        if isinstance(value, Mapping):
            values = {str(k): float(v) for k, v in value.items()}
            if not values:
                raise ValueError(f"the metric {spec!r} returned an empty dict")
            return values if attr in values else {attr: next(iter(values.values())), **values}
        return {attr: float(value)}

    return attr, metric


def ranked_by_disagreement(reference: Mapping[str, np.ndarray],
                           candidate: Mapping[str, np.ndarray], count: int) -> Sequence[int]:
    """Indices of the ``count`` samples where float and int8 outputs differ most (NNCF's
    trick: sensitivity measured there separates layers far better than on average samples)."""
    name = next(k for k, v in reference.items() if v.dtype.kind == "f")
    r = reference[name].reshape(len(reference[name]), -1).astype(np.float64)
    c = candidate[name].reshape(len(candidate[name]), -1).astype(np.float64)
    cos = np.sum(r * c, 1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1),
                                        1e-12)
    return list(np.argsort(cos)[:count])
