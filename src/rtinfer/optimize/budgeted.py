"""Quantize under an accuracy budget: measure, find what hurts, keep it in float, re-measure.

    result = quantize_within_budget(model, Quantize(), calibration, validation, budget,
                                    targets=y_val, metric=kit_metric(kit))
    result.status          # "ok" or "over_budget" (then result.model is None: never shipped)
    result.kept_in_float   # the layers that had to stay float, most harmful first
    result.sensitivity     # every layer's harm when it alone is quantized

The loop, in the spirit of NNCF's accuracy control but with explicit budgets:

1. quantize everything (the ``config`` given) and evaluate on the validation inputs;
2. within budget (every limit of ``budget`` holds: :mod:`rtinfer.optimize.budget`): done.
   Otherwise try the other calibration methods (percentile, entropy) and keep the best (the
   least share of any limit used) as the base; still over budget and ``try_dynamic``, try int8
   weights with activations quantized at run time on OpenVINO (no calibrated range to get
   wrong; MatMul models only), accepted when within budget; still over budget and given a
   ``finetune`` hook (a torch model and training data: :mod:`rtinfer.optimize.passes.qat`),
   fine-tune under simulated int8 and quantize the fine-tuned weights, which become the base
   when they do better; still over budget, rank the quantizable layers by *sensitivity*:
   quantize one layer alone and measure how far its outputs move from the float model's, on
   the validation samples where the fully quantized model disagrees most with float (where
   the damage shows);
3. keep the k most sensitive layers in float, finding the smallest k that meets the budget by
   galloping then bisecting over k (at most ``max_fallback``; 0 skips the ranking too),
   re-quantizing from cached calibration statistics;
4. a model over budget is never returned as a result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from typing import Any

import numpy as np

from rtinfer._progress import Progress
from rtinfer.engines import available_engines, load
from rtinfer.errors import ExportError
from rtinfer.models.imported import ImportedModel
from rtinfer.optimize.evaluate import (
    NO_LABELS,
    Budget,
    Evaluation,
    Metric,
    evaluate_candidate,
    fidelity,
    ranked_by_disagreement,
    run_batches,
)
from rtinfer.optimize.passes.quantize import (
    QUANTIZABLE_OPS,
    Feeds,
    Quantize,
    as_feeds,
    preprocessed,
    quantize,
)
from rtinfer.optimize.variants import mostly_dense, op_histogram

__all__ = ["QuantizeResult", "quantizable_nodes", "quantize_within_budget"]

_FOCUS_SAMPLES = 64  # how many worst-disagreeing samples the sensitivity is measured on


@dataclass
class QuantizeResult:
    status: str                                   # "ok" or "over_budget"
    model: ImportedModel | None                   # None when over budget: never shipped
    config: Quantize                              # the setting that produced ``model``
    budget: Budget
    float_metrics: dict[str, float]
    evaluation: Evaluation | None                 # of the returned model (validation split)
    steps: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    sensitivity_by: str = ""
    kept_in_float: list[str] = field(default_factory=list)
    finetuned: bool = False                       # ``model`` was quantized from QAT weights

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "config": self.config.to_dict(),
            "budget": self.budget.to_dict(),
            "float_metrics": self.float_metrics,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "steps": self.steps,
            "sensitivity": self.sensitivity,
            "sensitivity_by": self.sensitivity_by,
            "kept_in_float": self.kept_in_float,
            "finetuned": self.finetuned,
        }


def quantizable_nodes(model: ImportedModel, config: Quantize) -> list[str]:
    """Names of the nodes the quantizer would quantize (the names ``exclude`` takes)."""
    import onnx

    path = model.path if config.engine == "openvino" else preprocessed(model)
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in QUANTIZABLE_OPS and n.name]


def quantize_within_budget(
    model: ImportedModel,
    config: Quantize,
    calibration: Feeds | Iterable[Mapping[str, np.ndarray]] | None,
    validation: Feeds | Iterable[Mapping[str, np.ndarray]],
    budget: Budget,
    *,
    targets: np.ndarray | None = None,
    metric: Metric | None = None,
    threads: int | None = None,
    max_fallback: int | None = None,
    try_calibrations: bool = True,
    try_dynamic: bool = False,
    finetune: Callable[[Quantize], ImportedModel] | None = None,
    varied: Feeds | None = None,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> QuantizeResult:
    """See the module docstring. ``validation`` decides; report test figures separately.

    ``finetune(config)`` returns a float model fine-tuned to survive ``config`` (QAT); it is
    called at most once, only when post-training quantization alone misses the budget.
    ``varied``: inputs of varied text for the varied-agreement guard
    (:func:`rtinfer.optimize.augment.varied_inputs`). ``deadline`` (``time.monotonic()``):
    no new quantize-and-evaluate round starts after it; the result is then over budget, with
    a step saying why.
    """
    say = progress or (lambda _msg: None)
    calibration = as_feeds(calibration) if calibration is not None else None
    validation = as_feeds(validation)  # an iterable is read once, here
    with load(model, "onnxruntime", threads, warmup=False) as session:
        reference = run_batches(session, validation)
        varied_ref = run_batches(session, varied) if varied is not None else None
    float_metrics = metric(targets, reference) if metric is not None and targets is not None \
        else {}
    budget = budget.resolve(list(float_metrics), reference,
                            labels=targets is not None and targets is not NO_LABELS,
                            varied=varied is not None)
    say(f"budget: {budget.describe()}" + (" (the default; --max-drop sets another)"
                                          if budget.default else ""))

    source = model  # what gets quantized: the float model, or its QAT fine-tune

    best: list[Evaluation] = []  # every evaluation, for a search stopped by the clock
    tried: dict[int, tuple[ImportedModel, Evaluation, Quantize]] = {}  # float layers -> result
    passing: int | None = None  # the fewest float layers known to be within budget

    def attempt(cfg: Quantize, base: ImportedModel | None = None
                ) -> tuple[ImportedModel, Evaluation, dict[str, np.ndarray]]:
        if best and deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime  # the first attempt always runs: a result needs one
        q = quantize(base or source, cfg, calibration)
        with load(q, cfg.runtime, threads, warmup=False) as s:
            outputs = run_batches(s, validation)
            pair = None if varied is None or varied_ref is None else (
                varied_ref, run_batches(s, varied))
        ev = evaluate_candidate(outputs, reference, budget, targets=targets, metric=metric,
                                float_metrics=float_metrics, varied=pair)
        best.append(ev)
        return q, ev, outputs

    result = QuantizeResult(status="over_budget", model=None, config=config, budget=budget,
                            float_metrics=float_metrics, evaluation=None)
    try:
        say(f"quantizing: {config.describe()}")
        q, ev, outputs = attempt(config)
        result.steps.append(_step(config, ev, "everything quantized"))
        if ev.within_budget:
            return _accept(result, q, config, ev)
        if config.engine == "litert":
            # TFLite's converter offers no per-layer float fallback to search over: over
            # budget is the answer (another method may fit: dynamic, float16).
            result.evaluation = ev
            return result

        if config.method == "static" and config.engine == "onnxruntime" and try_calibrations:
            # A different range estimate can fix outlier-heavy activations without giving up any
            # int8 layer; the best one (smallest drop) becomes the base of the layer fallback.
            for method in [m for m in ("percentile", "entropy", "minmax")
                           if m != config.calibration]:  # not the one just tried
                cfg = replace(config, calibration=method)
                say(f"trying {method} calibration")
                try:
                    q2, ev2, out2 = attempt(cfg)
                except ExportError as exc:  # e.g. histogram calibrators on constant tensors
                    result.steps.append({"what": f"{method} calibration", "config": cfg.describe(),
                                         "failed": str(exc), "within_budget": False,
                                         "drop": None})
                    continue
                result.steps.append(_step(cfg, ev2, f"{method} calibration, everything quantized"))
                if ev2.within_budget:
                    return _accept(result, q2, cfg, ev2)
                if ev2.budget_used < ev.budget_used:
                    config, ev, outputs = cfg, ev2, out2

        if try_dynamic and config.method == "static" and mostly_dense(op_histogram(source)) \
                and "openvino" in available_engines() and find_spec("nncf") is not None:
            cfg = Quantize(method="dynamic", engine="openvino", exclude=config.exclude)
            say(f"trying {cfg.describe()}")
            try:
                q2, ev2, _ = attempt(cfg)
            except ExportError as exc:
                result.steps.append({"what": "dynamic activations (OpenVINO)", "failed": str(exc),
                                     "config": cfg.describe(), "within_budget": False,
                                     "drop": None})
            else:
                result.steps.append(_step(cfg, ev2, "int8 weights, activations quantized at run "
                                                    "time (OpenVINO)"))
                if ev2.within_budget:
                    return _accept(result, q2, cfg, ev2)

        if finetune is not None and config.method == "static":
            say("over budget: quantization-aware fine-tuning")
            tuned = finetune(config)
            q2, ev2, out2 = attempt(config, tuned)
            result.steps.append(_step(config, ev2, "QAT fine-tuned, everything quantized"))
            # The fine-tune becomes the base of the layer fallback.
            if ev2.budget_used < ev.budget_used:
                source, ev, outputs, result.finetuned = tuned, ev2, out2, True
            if ev2.within_budget:
                return _accept(result, q2, config, ev2)

        if max_fallback == 0:  # no layer may stay float: the ranking would go unused
            result.evaluation = ev
            return result
        say("over budget: measuring each layer's sensitivity")
        # NNCF recollects statistics on every call (~10 s on MiniLM), so its layers are ranked with
        # ONNX Runtime's quantizer (cached calibration, ~1 s a layer) as a proxy; both see the
        # same node names in the exported graph, and only names present in both are ranked.
        proxy = replace(config, engine="onnxruntime", preset="default") \
            if config.engine == "openvino" else config
        names = set(quantizable_nodes(source, config))
        nodes = [n for n in quantizable_nodes(source, proxy)
                 if n in names and n not in config.exclude]
        focus = ranked_by_disagreement(reference, outputs, _FOCUS_SAMPLES)
        focus_inputs = {k: v[focus] for k, v in validation.items()}
        focus_ref = {k: v[focus] for k, v in reference.items()}
        for i, node in enumerate(nodes):
            if deadline is not None and time.monotonic() > deadline:
                raise _OutOfTime
            say(f"sensitivity {i + 1}/{len(nodes)}: {node}")
            alone = replace(proxy, exclude=tuple(n for n in nodes if n != node) + config.exclude)
            with load(quantize(source, alone, calibration), "onnxruntime", threads,
                      warmup=False) as s:
                fid = fidelity(focus_ref, run_batches(s, focus_inputs))
            first = next(iter(fid.values()))
            result.sensitivity.append({"node": node, "harm": 1.0 - first["cosine_mean"],
                                       "cosine_min": first["cosine_min"],
                                       "sqnr_db": first["sqnr_db"]})
        result.sensitivity.sort(key=lambda r: -r["harm"])
        result.sensitivity_by = proxy.describe() + " of each layer alone"

        limit = len(nodes) if max_fallback is None else min(max_fallback, len(nodes))

        def keep(k: int) -> bool:
            """Quantize with the ``k`` most sensitive layers in float; True if within budget."""
            kept = [r["node"] for r in result.sensitivity[:k]]
            cfg = replace(config, exclude=config.exclude + tuple(kept))
            say(f"keeping {k} layer(s) in float")
            q, ev, _ = attempt(cfg)
            tried[k] = (q, ev, cfg)
            result.steps.append(_step(cfg, ev, f"kept the {k} most sensitive layer(s) in float"))
            return ev.within_budget

        # The drop shrinks (nearly) monotonically as more layers stay float, so gallop (1, 2, 4,
        # …) to the first count within budget, then bisect down to the smallest such count:
        # about 2·log2(k) quantize-and-evaluate rounds instead of k.
        failing, k = 0, 1
        while k <= limit:
            if keep(k):
                passing = k
                break
            failing, k = k, k * 2
        if passing is None and failing < limit and keep(limit):
            passing = limit
        if passing is None:
            result.evaluation = tried[max(tried)][1] if tried else ev
            return result
        while passing - failing > 1:
            mid = (passing + failing) // 2
            if keep(mid):
                passing = mid
            else:
                failing = mid
    except _OutOfTime:
        say("time budget reached: stopping the search for a quantized model within budget")
        result.steps.append({"what": "time budget reached", "config": config.describe(),
                             "within_budget": False, "drop": None})
        if passing is None:  # nothing within budget yet: report the closest attempt
            result.evaluation = min(best, key=lambda e: e.budget_used) if best else None
            return result
    # The smallest count of float layers known to be within budget (the bisection may have
    # been stopped by the clock before it reached the smallest).
    q, ev, cfg = tried[passing]
    result.kept_in_float = [r["node"] for r in result.sensitivity[:passing]]
    return _accept(result, q, cfg, ev)


class _OutOfTime(Exception):
    """The deadline passed before the next quantize-and-evaluate round."""


def _accept(result: QuantizeResult, q: ImportedModel, cfg: Quantize,
            ev: Evaluation) -> QuantizeResult:
    result.status, result.model, result.config, result.evaluation = "ok", q, cfg, ev
    return result


def _step(cfg: Quantize, ev: Evaluation, what: str) -> dict[str, Any]:
    return {"what": what, "config": cfg.describe(), "drop": ev.drop,
            "within_budget": ev.within_budget, "excluded_by": ev.excluded_by,
            "checks": [c.to_dict() for c in ev.checks], "metrics": ev.metrics,
            "fidelity": ev.fidelity}

