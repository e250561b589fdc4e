"""What pruning and distillation share: a torch task, a bounded training loop, and the finish.

A :class:`TorchTask` is a PyTorch module with its data splits and metric — from a kit
(``task_from(kit="perception")``: the kit's float model, train / calibration / validation / test
splits, its metric) or from a module and arrays. :func:`train` runs at most ``steps`` optimizer
steps and at most ``max_seconds`` of wall time, reporting progress. :func:`finish` exports the
result to ONNX (verified against PyTorch), evaluates it against the original on the held-out
test split, measures both side by side on ONNX Runtime, and writes an artifact with the recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._progress import Progress
from rtinfer.bench.inprocess import SCHEMA
from rtinfer.bench.samples import at_shapes
from rtinfer.optimize.augment import varied_inputs
from rtinfer.optimize.evaluate import Budget, ExtraSet, beyond_split, kit_metric

__all__ = ["TorchResult", "TorchTask", "finish", "logits_of", "measure_side_by_side",
           "task_from", "to_tensors"]

Arrays = dict[str, np.ndarray]
Metric = Callable[[np.ndarray, Mapping[str, np.ndarray]], dict[str, float]]


@dataclass
class TorchTask:
    """A torch module, its data splits ``{name: (inputs, targets)}`` and how to judge it."""

    name: str
    module: Any
    splits: dict[str, tuple[Arrays, np.ndarray]]
    metric: Metric
    headline: str
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    original: Any = None  # the original ImportedModel (ONNX), when there is one
    kit: Any = None
    # The original module as it was, for predictions only (the passes change ``module``).
    pristine: Any = field(default=None, repr=False)

    def split(self, name: str) -> tuple[Arrays, np.ndarray]:
        if name not in self.splits:
            raise ValueError(f"{self.name} has no '{name}' split; it has {sorted(self.splits)}")
        return self.splits[name]


@dataclass
class TorchResult:
    """What :func:`~rtinfer.optimize.passes.prune.prune` and
    :func:`~rtinfer.optimize.passes.distill.distill` return."""

    module: Any                    # the pruned / distilled torch module (eval mode)
    model: Any                     # its ONNX export (ImportedModel)
    report: dict[str, Any]         # JSON-ready: recipe, held-out evaluation, latency, sizes
    artifact: Path | None = None


def task_from(model: Any = None, *, kit: Any = None, data: Mapping[str, Any] | None = None,
              metric: Metric | None = None, size: str = "full") -> TorchTask:
    """A task from a kit (name or :class:`~rtinfer.kits.Kit`), or from a torch module and
    ``data={"train": (inputs, targets), "test": (inputs, targets), ...}``."""
    if kit is not None:
        from rtinfer import kits

        k = kits.load(kit, size=size, build=False) if isinstance(kit, str) else kit
        original = k.original_model()
        held: Any = original.load_torch() if model is None else None
        if model is None and held is None:
            raise ValueError(f"'{k.name}' has no PyTorch form of its model (an ONNX file, or "
                             "a kit built without its weights: rtinfer kits build "
                             f"{k.name} --force)")
        # The passes change ``module`` in place: they get a copy, and the original's own
        # module (a task holds it, a kit's artifact made it) stays the pristine one.
        module = model if model is not None else copy.deepcopy(held)
        spec = original.spec
        return TorchTask(
            name=k.name, module=module.eval(),
            splits={s: (k.split(s).inputs, k.split(s).targets) for s in k.split_names},
            metric=kit_metric(k), headline=k.metric, input_names=list(spec.input_names),
            output_names=list(spec.output_names), dynamic_axes=_axes(spec),
            original=original, kit=k, pristine=held.eval() if held is not None else None)
    torch = _torch()
    if not isinstance(model, torch.nn.Module) or data is None:
        raise ValueError("give a kit (kit='perception'), or a torch.nn.Module together with "
                         "data={'train': (inputs, targets), 'test': (inputs, targets)}")
    missing = [s for s in ("train", "test") if s not in data]
    if missing:
        raise ValueError(f"data lacks the split(s) {missing}; give at least 'train' and 'test' "
                         "as (inputs dict, integer targets)")
    splits = {s: ({k: np.asarray(v) for k, v in x.items()}, np.asarray(y))
              for s, (x, y) in data.items()}
    names = list(splits["train"][0])
    return TorchTask(name=type(model).__name__, module=model.eval(), splits=splits,
                     metric=metric or _accuracy, headline="accuracy", input_names=names,
                     output_names=[])


def to_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """numpy feeds -> torch tensors; token inputs are trimmed to the longest unmasked row."""
    torch = _torch()
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    mask = out.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        used = int(mask.sum(1).max())  # padding beyond every row's length changes nothing
        out = {k: v[:, :used] if v.dim() == 2 and v.shape[1] == mask.shape[1] else v
               for k, v in out.items()}
    return out


def logits_of(output: Any) -> Any:
    """The class scores of a module's output: the tensor itself or its ``logits`` entry."""
    return output["logits"] if isinstance(output, Mapping) else output


def predict(task: TorchTask, module: Any, split: str | Arrays, batch: int = 128) -> Arrays:
    """Run ``module`` over a split (a name, or the inputs themselves) in PyTorch; outputs
    named like the task's outputs."""
    torch = _torch()
    inputs = task.split(split)[0] if isinstance(split, str) else split
    n = len(next(iter(inputs.values())))
    mask = inputs.get("attention_mask")
    # Similar lengths share a batch (less padding); results go back to the split's order.
    order = np.argsort(mask.sum(1), kind="stable") if mask is not None else np.arange(n)
    chunks: dict[str, list[np.ndarray]] = {}
    module.eval()
    with torch.no_grad():
        for lo in range(0, n, batch):
            rows = order[lo:lo + batch]
            out = module(**to_tensors({k: v[rows] for k, v in inputs.items()}))
            named = dict(out) if isinstance(out, Mapping) else {
                (task.output_names or ["logits"])[0]: out}
            for k, v in named.items():
                chunks.setdefault(k, []).append(v.numpy())
    back = np.argsort(order)
    return {k: np.concatenate(v)[back] for k, v in chunks.items()}


def export(task: TorchTask, module: Any) -> Any:
    """The module as a verified ONNX model with the original's names and dynamic axes."""
    from rtinfer.models import import_model

    inputs, _ = task.split("validation" if "validation" in task.splits else "test")
    example = {k: v.numpy() for k, v in to_tensors({k: v[:4] for k, v in inputs.items()}).items()}
    return import_model(module.eval(), example, output_names=task.output_names or None,
                        dynamic_axes={k: v for k, v in task.dynamic_axes.items() if k in example})


def measure_side_by_side(models: Mapping[str, Any], feeds: Arrays, *, threads: int = 2,
                         rounds: int = 5, window_s: float = 0.5, engine: str = "onnxruntime",
                         progress: Progress | None = None) -> dict[str, Any]:
    """p50/p99 of each model on ``engine`` at ``threads``, in interleaved rounds
    (:func:`rtinfer.optimize.pipeline.measure`); the speedup of each against the first is the
    median of per-round p50 ratios."""
    from rtinfer.optimize import pipeline

    out, left_out = pipeline.measure({name: (m, engine) for name, m in models.items()}, feeds,
                                     threads=threads, rounds=rounds, window_s=window_s,
                                     progress=progress)
    if left_out:
        from rtinfer.errors import EngineError

        raise EngineError("; ".join(f"{name}: {why}" for name, why in left_out.items()))
    rows = {name: {"p50_ms": row["latency_ms"]["p50"], "p99_ms": row["latency_ms"]["p99"],
                   "n": row["latency_ms"]["n"], "speedup": row["speedup"],
                   "speedup_per_round": row["speedup_per_round"],
                   "estimator": row["latency_ms"]["estimator"]} for name, row in out.items()}
    return {"engine": engine, "threads": threads, "rounds": rounds,
            "input_shapes": {k: list(v.shape) for k, v in feeds.items()},
            "baseline": next(iter(models)), "models": rows,
            "method": "interleaved rounds, closed loop, one request at a time; speedup = "
                      "median of per-round p50 ratios"}


def latency_feeds(task: TorchTask, image_size: int | None) -> Arrays:
    """One real test sample (batch 1): images resized to ``image_size`` when given (the
    perception kit's network runs at any size), token inputs trimmed to the sentence."""
    inputs, _ = task.split("test")
    one = {k: v[:1] for k, v in inputs.items()}
    if image_size is not None and "image" in one:
        n, c = one["image"].shape[:2]
        one = at_shapes([one], {"image": (n, c, image_size, image_size)})[0]
    return {k: v.numpy() for k, v in to_tensors(one).items()}


def announce_budget(task: TorchTask, budget: Any, say: Progress) -> Budget:
    """The job's budget (a Budget, a ``--max-drop`` string or None for the default), said at
    the start of the job."""
    if not isinstance(budget, Budget):
        budget = Budget.from_options(budget, headline=task.headline)
    elif not budget.headline:  # built before the task was known (the CLI)
        budget = replace(budget, headline=task.headline)
    say(f"budget: {budget.describe()}" + (" (the default)" if budget.default else ""))
    return budget


def finish(task: TorchTask, module: Any, *, kind: str, recipe: list[dict[str, Any]],
           details: Mapping[str, Any], out: str | Path | None, name: str | None,
           threads: int = 2, image_size: int | None = None, measure: bool = True,
           budget: Budget | None = None, progress: Progress | None = None) -> TorchResult:
    """Export, evaluate against the original on held-out data under ``budget``, measure,
    write the artifact. The user chose the technique and its amount, so an over-budget result
    is still written, with ``status: over_budget`` and the limits it broke."""
    from rtinfer.hardware import environment
    from rtinfer.models.summary import count_flops
    from rtinfer.optimize import pipeline

    say = progress or (lambda _msg: None)
    say("exporting to ONNX and verifying against PyTorch")
    model = export(task, module)
    original = task.original or export(task, _original_module(task))
    say("evaluating against the original on the held-out test split")
    _, targets = task.split("test")
    ref, got = predict(task, _original_module(task), "test"), predict(task, module, "test")
    before = task.metric(targets, ref)
    # Held-out and reported only (prune and distill choose nothing): 500 varied sentences,
    # half the search's, since PyTorch runs both models on them here.
    varied_in = varied_inputs(task.kit, "test", n=500)
    varied = None if varied_in is None else (predict(task, _original_module(task), varied_in),
                                             predict(task, module, varied_in))
    budget = (budget or Budget.from_options(None, headline=task.headline)).resolve(
        list(before), ref, varied=varied is not None)
    label = task_label(kind)
    beyond = beyond_split(ExtraSet.of_kit(task.kit),
                          partial(predict, task, _original_module(task)),
                          partial(predict, task, module))
    held_out = pipeline.held_out(ref, got, label=label, budget=budget, targets=targets,
                                 metric=task.metric, varied=varied, beyond=beyond)
    feeds = latency_feeds(task, image_size)
    dims = _dims(model, feeds)
    sizes = {name: {"onnx_bytes": m.size_bytes, "parameters": count_parameters(mod),
                    "flops": count_flops(m, dims)["total"]}
             for name, m, mod in (("original", original, _original_module(task)),
                                  (label, model, module))}
    report: dict[str, Any] = {
        "schema": SCHEMA, "kind": kind, "task": task.name,
        "status": "ok" if held_out["budget"]["within_budget"] else "over_budget",
        "budget": budget.to_dict(),
        "metric": task.headline, "recipe": recipe, **details, "held_out": held_out,
        "size": sizes, "environment": environment()}
    if measure:
        say("measuring the original and the result side by side")
        perf = measure_side_by_side({"original": original, label: model}, feeds,
                                    threads=threads, progress=say)
        speedup = perf["models"][label]["speedup"]
        perf["faster"] = pipeline.faster(speedup)
        report["performance"] = perf
        if not perf["faster"]:
            report["message"] = (
                f"the {label} model is not faster than the original on this machine "
                f"({speedup:.2f}x at batch 1, ONNX Runtime, {threads} threads)"
                + ("; zeroed weights are still multiplied by dense kernels — use "
                   "structured=True to remove channels" if "sparsity" in details else ""))
    result = TorchResult(module=module, model=model, report=report)
    if out is not None:
        art = pipeline.write(model, out, name or f"{task.name}-{kind}",
                             recipe=recipe, held=held_out, label=label,
                             performance=report.get("performance", {}),
                             # Measured against the original, not chosen among engines, and
                             # at the job's threads: serving picks the engine, shares the cores.
                             engine=None, threads=None, task=task.kit,
                             measurements={"size": sizes}, reference=original)
        result.artifact = art.path
        report["artifact"] = str(art.path)
    return result


def task_label(kind: str) -> str:
    return {"prune": "pruned", "distill": "distilled"}.get(kind, kind)


def _original_module(task: TorchTask) -> Any:
    """The task's original module as it was: kept from the start, else a copy made before
    anything changes ``task.module``."""
    if task.pristine is None:
        task.pristine = copy.deepcopy(task.module).eval()
    return task.pristine


def keep_original(task: TorchTask) -> Any:
    """Snapshot the original module (call before changing ``task.module`` in place)."""
    return _original_module(task)


def _dims(model: Any, feeds: Arrays) -> dict[str, int]:
    dims: dict[str, int] = {}
    for t in model.spec.inputs:
        for axis, d in enumerate(t.shape):
            if isinstance(d, str):
                dims[d] = int(feeds[t.name].shape[axis])
    return dims


def count_parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _axes(spec: Any) -> dict[str, dict[int, str]]:
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and i > 0}
            for t in spec.inputs}


def _accuracy(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    from rtinfer.metrics import accuracy

    first = next(v for v in outputs.values() if v.ndim == 2)
    return {"accuracy": accuracy(targets, first)}


def _torch() -> Any:
    from rtinfer._deps import require

    return require("torch", "Pruning and distillation")
