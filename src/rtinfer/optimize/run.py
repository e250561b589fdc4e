"""The whole quantization job behind ``rtinfer quantize``: data in, verified artifact out.

    result = run_quantize(kit="intent", config=Quantize(engine="openvino",
                          preset="transformer"), max_drop="1pt", metric="sentence_embedding.cosine",
                          out="repo")

1. Data: a kit's calibration / validation / test splits (labels and its metric), or an ``.npz``
   of arrays named after the model's inputs (optional ``labels``): the first half calibrates,
   the second half validates; without labels the budget applies to fidelity.
2. Quantize under the budget on the validation split (:func:`quantize_within_budget`): static
   int8 that misses the budget is followed by other calibrations, then OpenVINO's int8 weights
   with run-time activation quantization (``try_dynamic``), then, with a kit and ``qat``,
   quantization-aware fine-tuning on the kit's training split (:mod:`rtinfer.optimize.passes.qat`)
   before any layer is kept in float.
3. Report on held-out data (the kit's test split): task metrics and fidelity, float vs int8.
4. Measure float and int8 latency side by side, in this run, on the engine that will run it;
   when int8 is not faster, say so.
5. Write the artifact through :func:`rtinfer.optimize.pipeline.write` (recipe, figures,
   engine and task in its manifest; the kit's pre-processing in the folder's ``rtinfer.json``),
   unless over budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer.bench.inprocess import SCHEMA
from rtinfer.bench.samples import real_batches
from rtinfer.engines import load
from rtinfer.errors import InvalidInputError
from rtinfer.hardware import environment
from rtinfer.models import ImportedModel, import_model
from rtinfer.optimize import pipeline
from rtinfer.optimize.augment import varied_inputs
from rtinfer.optimize.budgeted import Progress, quantize_within_budget
from rtinfer.optimize.evaluate import (
    NO_LABELS,
    Budget,
    ExtraSet,
    beyond_split,
    kit_metric,
    run_batches,
    user_metric,
)
from rtinfer.optimize.passes import Recipe
from rtinfer.optimize.passes.qat import QAT, finetune
from rtinfer.optimize.passes.quantize import Quantize

__all__ = ["Splits", "budget_for", "extra_set", "loaded_kit", "model_name", "run_quantize",
           "task_data"]



def run_quantize(
    model: Any = None,
    *,
    kit: str | None = None,
    data: str | Path | None = None,
    config: Quantize | None = None,
    max_drop: str | None = None,
    metric: str | None = None,
    min_agreement: float | None = None,
    class_recall: str | None = None,
    extra_eval: str | Path | None = None,
    calibration_extra: str | Path | None = None,
    threads: int | None = None,
    qat: QAT | None = None,
    try_dynamic: bool = True,
    out: str | Path | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """See the module docstring; returns a JSON-ready result (``status`` first).

    ``extra_eval``: an ``.npz`` (inputs, optional ``labels``) reported beside the held-out
    split and never used to choose; a kit's own such set is used without it.

    ``calibration_extra``: an ``.npz`` of inputs, or a folder of them (what the server's
    online guard captures: :mod:`rtinfer.serve.guard`), calibrated on besides the
    calibration split (``calib_samples`` of which still count).

    ``max_drop``, ``min_agreement``, ``class_recall``: the budget
    (:meth:`Budget.from_options`); without ``max_drop``, 1% of the original's value of every
    declared metric, with the default guards.

    ``try_dynamic``: when static int8 misses the budget, try OpenVINO's int8 weights with
    run-time activation quantization (the result then deploys on OpenVINO) before QAT and
    float fallback; False keeps to ``config.engine``.
    """
    config = config or Quantize()
    say = progress or (lambda _msg: None)
    float_model, splits, task, budget_metric = task_data(model, kit, data, metric)
    # Never a disabled budget: without --max-drop, 1% of the original's value of every
    # declared metric (it was "100%", which let any int8 model through).
    budget = budget_for(max_drop, metric, budget_metric, min_agreement, class_recall)
    extra = extra_set(extra_eval, kit, float_model, task)  # a bad file fails before any work
    calibration = splits["calibration"][0]
    if calibration_extra is not None:
        more = read_calibration_extra(calibration_extra, calibration)
        extra_rows = len(next(iter(more.values())))
        say(f"calibrating on {extra_rows} extra input(s) from {calibration_extra}")
        calibration = {k: np.concatenate([more[k], v]) for k, v in calibration.items()}
        config = replace(config, calib_samples=config.calib_samples + extra_rows)
    validation, val_targets = splits["validation"]
    hook, qat_note = None, "not asked for"
    if qat is not None:
        if "train" not in splits:
            qat_note = "unavailable: QAT needs a training split (use a kit)"
        elif float_model.load_torch() is None:
            qat_note = "unavailable: the model has no PyTorch module"
        else:
            qat_note = "not needed: post-training quantization met the budget"
            train = splits["train"][0]

            def hook(cfg: Quantize) -> ImportedModel:
                return finetune(float_model, cfg, qat, train, calibration, threads=threads,
                                progress=say)

    kit_obj = loaded_kit(kit)
    result = quantize_within_budget(
        float_model, config, calibration, validation, budget,
        targets=val_targets if task else None, metric=task, threads=threads, finetune=hook,
        try_dynamic=try_dynamic, varied=varied_inputs(kit_obj, "validation"), progress=say,
    )
    if any(s["what"].startswith("QAT") for s in result.steps):
        qat_note = ("used: the quantized model starts from the fine-tuned weights"
                    if result.finetuned else "tried: it did not reduce the drop; not used")
    report: dict[str, Any] = {"schema": SCHEMA, "kind": "quantize",
                              **result.to_dict(), "environment": environment()}
    report["qat"] = {"config": qat.to_dict() if qat else None, "outcome": qat_note}
    if result.model is None:
        report["message"] = (
            f"no quantized model met the budget ({result.budget.describe()}); nothing was "
            "written. "
            "Try --engine openvino --preset transformer, another --calibration, or a larger "
            "budget"
        )
        return report

    say("evaluating on held-out data")
    test_inputs, test_targets = splits["test"]
    runtime = result.config.runtime
    with load(float_model, runtime, threads, warmup=False) as f_s, \
            load(result.model, runtime, threads, warmup=False) as q_s:
        f_out, q_out = run_batches(f_s, test_inputs), run_batches(q_s, test_inputs)
        varied_in = varied_inputs(kit_obj, "test")
        varied = None if varied_in is None else (run_batches(f_s, varied_in),
                                                 run_batches(q_s, varied_in))
        beyond = beyond_split(extra, partial(run_batches, f_s), partial(run_batches, q_s))
    labelled = task is not None and test_targets is not None
    held = pipeline.held_out(f_out, q_out, label="int8", budget=result.budget,
                             targets=test_targets if labelled else None,
                             metric=task if labelled else None, varied=varied, beyond=beyond)
    say("measuring float and int8 latency side by side, in interleaved rounds")
    one = real_batches(test_inputs, 1)  # real rows at their own shapes (text: its length)
    timed, _ = pipeline.measure({"original": (float_model, runtime),
                                 "int8": (result.model, runtime)}, one, threads=threads,
                                progress=say)
    speedup = timed["int8"]["speedup"]
    report["held_out"] = held
    report["performance"] = {
        "engine": runtime, "batch": 1, "rounds": pipeline.ROUNDS,
        "p50_ms": {k: v["latency_ms"]["p50"] for k, v in timed.items()},
        "p99_ms": {k: v["latency_ms"]["p99"] for k, v in timed.items()},
        "speedup": speedup, "faster": pipeline.faster(speedup),
        "estimator": timed["original"]["latency_ms"]["estimator"],
        "method": "interleaved rounds; speedup = median of per-round p50 ratios"}
    if not report["performance"]["faster"]:
        report["message"] = (
            f"int8 is not faster than float on this machine for this model ({speedup:.2f}x at "
            f"batch 1 on {runtime}); the float model remains the better deployment"
        )
    if out is not None:
        # The report's key stays "int8" for every method; the folder says what the model is.
        passes = ([qat] if qat is not None and result.finetuned else []) + [result.config]
        default_name = f"{model_name(model, float_model, kit)}-{result.config.kind}"
        art = pipeline.write(
            result.model, out, name or default_name,
            recipe=Recipe(tuple(passes)), held=held, label="int8",
            performance=report["performance"], engine=runtime, threads=threads, task=kit_obj,
            measurements={"quantization": {"budget": report["budget"],
                                           "kept_in_float": result.kept_in_float}},
            reference=float_model)
        report["artifact"] = str(art.path)
    return report


Splits = dict[str, tuple[dict[str, np.ndarray], np.ndarray | None]]


def loaded_kit(kit: Any) -> Any:
    """The loaded kit for a name or a Kit; None without one."""
    if kit is None or not isinstance(kit, str):
        return kit
    from rtinfer import kits

    return kits.load(kit, build=False)


def extra_set(extra_eval: str | Path | None, kit: Any, model: ImportedModel,
              task: Any) -> ExtraSet | None:
    """The evaluation set reported beyond the split: ``--extra-eval FILE.npz``, else the
    kit's own, else none."""
    if extra_eval is not None:
        return ExtraSet.of_file(extra_eval, model.spec, task)
    return ExtraSet.of_kit(loaded_kit(kit))


def read_calibration_extra(path: str | Path, like: Mapping[str, np.ndarray]
                           ) -> dict[str, np.ndarray]:
    """The rows of an ``.npz`` (or of every ``.npz`` in a folder) with the inputs of ``like``
    and their shapes after the batch axis; a file with other inputs or shapes is an error."""
    path = Path(path)
    # A folder: every .npz below it (a guard writes <capture>/<model>/<version>/*.npz).
    files = sorted(f for f in path.rglob("*.npz") if not f.name.startswith(".")) \
        if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InvalidInputError(f"--calibration-extra {path}: no .npz file there")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in like}
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{f}: not a readable .npz of arrays ({exc})") from None
        if set(arrays) != set(like):
            raise InvalidInputError(f"{f} holds {sorted(arrays)}; the model's inputs are "
                                    f"{sorted(like)}")
        for k, v in arrays.items():
            if v.shape[1:] != like[k].shape[1:]:
                raise InvalidInputError(
                    f"{f}: input '{k}' has rows of shape {list(v.shape[1:])}, the calibration "
                    f"split's have {list(like[k].shape[1:])}")
            parts[k].append(v.astype(like[k].dtype, copy=False))
    return {k: np.concatenate(v) for k, v in parts.items()}


def budget_for(max_drop: str | None, metric: str | None, headline: str,
               min_agreement: float | None = None, class_recall: str | None = None) -> Budget:
    """A job's budget from its options: a bare ``--max-drop`` covers every declared metric,
    unless ``--metric`` named one (not a user function, whose entries are all declared)."""
    return Budget.from_options(max_drop, headline=headline,
                               every_declared=metric is None or ":" in metric,
                               min_agreement=min_agreement, class_recall=class_recall)



def task_data(model: Any, kit: Any, data: str | Path | None, metric: str | None = None
              ) -> tuple[ImportedModel, Splits, Any, str]:
    """The float model, its calibration/validation/test splits (inputs, targets or None), the
    task metric (None without labels) and the budget metric's name: ``metric`` itself, the
    function's name for a user metric ``package.module:function`` (which then is the task
    metric, with or without labels), or the default (the kit's; accuracy with labels;
    ``<first output>.cosine`` without)."""
    model_, splits, task, default = _task_data(model, kit, data)
    if metric is not None and ":" in metric:
        name, task = user_metric(metric)
        return model_, {k: (x, NO_LABELS if y is None else y)
                        for k, (x, y) in splits.items()}, task, name
    return model_, splits, task, metric or default


def _task_data(model: Any, kit: Any, data: str | Path | None
               ) -> tuple[ImportedModel, Splits, Any, str]:
    if kit is not None:
        from rtinfer import kits

        k = kit if isinstance(kit, kits.Kit) else kits.load(kit, build=False)
        splits: Splits = {s: (k.split(s).inputs, k.split(s).targets)
                          for s in ("train", "calibration", "validation", "test")
                          if s in k.split_names}
        return (import_model(model) if model is not None else k.original_model(), splits,
                kit_metric(k), k.metric)
    if model is None or data is None:
        raise ValueError("give a kit (--kit NAME), or a model with representative data "
                         "(--data FILE.npz holding arrays named after the model's inputs)")
    imported = import_model(model)
    with np.load(data, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    missing = [n for n in imported.spec.input_names if n not in arrays]
    if missing:
        raise ValueError(f"{data} lacks arrays for input(s) {missing}; it has {sorted(arrays)}")
    inputs = {n: arrays[n] for n in imported.spec.input_names}
    n = len(next(iter(inputs.values())))
    if n < 4:
        raise ValueError(f"{data} holds {n} samples; give at least 4 (half calibrate, "
                         "half validate)")
    half = n // 2
    labels = arrays.get("labels")
    first = {k: v[:half] for k, v in inputs.items()}
    second = {k: v[half:] for k, v in inputs.items()}
    rest = labels[half:] if labels is not None else None
    splits = {"calibration": (first, None), "validation": (second, rest), "test": (second, rest)}
    output = imported.spec.output_names[0]
    return imported, splits, _label_metric if labels is not None else None, (
        "accuracy" if labels is not None else f"{output}.cosine")


def _label_metric(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    from rtinfer.metrics import accuracy

    first = next(v for v in outputs.values() if v.ndim == 2 and v.dtype.kind == "f")
    return {"accuracy": accuracy(targets, first)}


def model_name(given: Any, model: ImportedModel, kit: Any = None) -> str:
    """The repository name a job writes under when none is given: the kit's; for a Keras
    file or SavedModel, the name it was given by (its conversion sits in a cache folder);
    else the model file's folder."""
    if kit is not None:
        return str(getattr(kit, "name", kit))
    if model.source.kind in ("keras", "saved_model") and isinstance(given, (str, Path)):
        path = Path(given)
        path = path.parent if path.name.isdigit() else path  # a TF Serving version folder
        return path.stem if path.is_file() else path.name
    return Path(str(model.path)).parent.name or "model"
