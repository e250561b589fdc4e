"""Judge an optimized model against the original: task metric, fidelity, and the budget.

Fidelity compares each output of the candidate with the float model's on the same inputs:
per-sample cosine (worst and mean), SQNR in dB (10·log10 of signal power over error power) and,
for outputs with a class axis, top-1 agreement. The task metric comes from a kit (or a user
function) when labels exist. A :class:`~rtinfer.optimize.budget.Budget` says what may be lost:
every declared metric, the worst class's recall and agreement with the original, each with its
limit (absolute points, ``0.5pt`` of accuracy is 0.005, or relative, ``1%`` of the original).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer.engines.base import run_in_batches as run_batches
from rtinfer.optimize.budget import Budget, Check, fidelity_value, has_varied, judge

__all__ = ["NO_LABELS", "Budget", "Evaluation", "ExtraSet", "beyond_split", "evaluate_candidate",
           "fidelity", "kit_metric", "ranked_by_disagreement", "run_batches", "user_metric"]

Metric = Callable[[np.ndarray, Mapping[str, np.ndarray]], dict[str, float]]


@dataclass
class Evaluation:
    metrics: dict[str, float]          # task metrics (empty without labels)
    fidelity: dict[str, dict[str, float]]
    drop: float                        # original minus candidate value of the headline metric
    within_budget: bool                # every limit of the budget holds
    checks: list[Check] = field(default_factory=list)

    @property
    def excluded_by(self) -> list[str]:
        """The limits this candidate broke (empty when within budget)."""
        return [c.metric for c in self.checks if not c.ok]

    @property
    def budget_used(self) -> float:
        """The largest share of any limit's allowance used: 1.0 = at a limit; compares
        candidates across limits of different units."""
        return max((c.used for c in self.checks), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "fidelity": self.fidelity, "drop": self.drop,
                "within_budget": self.within_budget, "budget_used": self.budget_used,
                "excluded_by": self.excluded_by, "checks": [c.to_dict() for c in self.checks]}


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
    varied: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]] | None = None,
) -> Evaluation:
    """Judge ``candidate`` outputs against the original's ``reference`` outputs: every limit
    of ``budget`` (:mod:`rtinfer.optimize.budget`) must hold. Task metrics need ``targets``
    and ``metric``; fidelity limits (``<output>.cosine``, ``<output>.top1``) need neither;
    ``varied`` = (original's, candidate's) outputs on varied text, for the varied-agreement
    guard (:func:`rtinfer.optimize.augment.varied_inputs`)."""
    fid = fidelity(reference, candidate)
    metrics: dict[str, float] = {}
    base: dict[str, float] = {}
    if targets is not None and metric is not None:
        metrics = metric(targets, candidate)
        base = dict(float_metrics or metric(targets, reference))
    # Class recall needs one integer class per sample (not one-hot rows, not "no labels").
    labels = targets if targets is not None and targets is not NO_LABELS and np.ndim(
        targets) == 1 else None
    budget = budget.resolve(list(base), reference, labels=labels is not None,
                            varied=varied is not None)
    if varied is None and has_varied(budget):  # e.g. a split without sentences: report the rest
        budget = budget.without_varied()
    varied_fid = fidelity(*varied) if varied is not None and has_varied(budget) else None
    checks = judge(budget, metrics=metrics, original=base, fidelity=fid, targets=labels,
                   reference=reference, candidate=candidate, varied=varied_fid)
    head = next((c for c in checks if c.metric == budget.headline), None)
    if head is not None:
        drop = head.drop
    elif budget.headline in metrics:
        drop = base[budget.headline] - metrics[budget.headline]
    else:
        drop = 1.0 - fidelity_value(fid, budget.headline)
    return Evaluation(metrics=metrics, fidelity=fid, drop=float(drop),
                      within_budget=all(c.ok for c in checks), checks=checks)


def kit_metric(kit: Any) -> Metric:
    def metric(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return dict(kit.recipe.evaluate(kit.meta, targets, outputs))

    return metric


Predict = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass
class ExtraSet:
    """An evaluation set from outside the split rule: reported, never used to choose."""

    what: str
    inputs: dict[str, np.ndarray]
    targets: np.ndarray | None
    metric: Metric | None

    @classmethod
    def of_kit(cls, kit: Any) -> ExtraSet | None:
        """The kit's own (:meth:`rtinfer.kits.Kit.beyond_split`); None without one."""
        found = kit.beyond_split() if kit is not None and hasattr(kit, "beyond_split") else None
        if found is None:
            return None
        what, split = found
        return cls(what, split.inputs, split.targets, kit_metric(kit))

    @classmethod
    def of_file(cls, path: str | Path, spec: Any, metric: Metric | None) -> ExtraSet:
        """An ``.npz`` with arrays named after the inputs of the model whose
        :class:`~rtinfer.ModelSpec` is ``spec`` and optional ``labels`` (then the task metric
        is reported on it too); names, dtypes, ranks and label count are checked here, before
        any work."""
        input_names = spec.input_names
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"--extra-eval {path}: not a readable .npz ({exc})") from exc
        missing = [n for n in input_names if n not in arrays]
        if missing:
            raise ValueError(f"--extra-eval {path} lacks arrays for input(s) {missing}; it has "
                             f"{sorted(arrays)}")
        try:
            inputs = spec.validate({n: arrays[n] for n in input_names})
        except ValueError as exc:  # InvalidInputError: wrong dtype, rank or size
            raise ValueError(f"--extra-eval {path}: {exc}") from exc
        labels = arrays.get("labels")
        n = len(next(iter(inputs.values())))
        if labels is not None and len(labels) != n:
            raise ValueError(f"--extra-eval {path}: {len(labels)} labels for {n} samples; give "
                             "one label per sample (or none)")
        return cls(f"{n} samples from {Path(path).name}", inputs, labels,
                   metric if labels is not None else None)


def beyond_split(extra: ExtraSet | None, original: Predict, candidate: Predict
                 ) -> dict[str, Any] | None:
    """How the candidate does on ``extra`` against the original: the task's metrics for
    both (with labels), fidelity and top-1 agreement. ``original`` and ``candidate`` map model
    inputs to outputs; None without an extra set."""
    if extra is None:
        return None
    ref, got = original(extra.inputs), candidate(extra.inputs)
    fid = fidelity(ref, got)
    out: dict[str, Any] = {"what": extra.what, "samples": len(next(iter(extra.inputs.values()))),
                           "fidelity": fid, "original": {}, "candidate": {}}
    if extra.metric is not None and extra.targets is not None:
        out["original"] = extra.metric(extra.targets, ref)
        out["candidate"] = extra.metric(extra.targets, got)
    classes = next((k for k, v in fid.items() if "top1_agreement" in v), None)
    if classes is not None:
        out["agreement"] = fid[classes]["top1_agreement"]
    return out


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
