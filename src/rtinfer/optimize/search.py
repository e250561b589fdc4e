"""``rtinfer optimize``: the fastest deployable variant within an accuracy budget, proved.

    result = optimize(kit="fraud", max_drop="1pt", out="repo")
    result["chosen"]      # the candidate written to repo/<name>/<version>/
    result["pareto"]      # candidates no other beats on both latency and the budget metric

The search, cheapest first, within ``time_budget_s``:

1. **Variants.** The original, then int8 variants (dynamic, static QDQ, NNCF, mixed precision
   with sensitive layers in float) — see :mod:`rtinfer.optimize.variants` — and, when a torch
   model and training data exist and the passes are installed, distilled/pruned models and
   their int8 forms.
2. **Accuracy first** (cheap): each variant's outputs on the validation split against the
   original's, under every limit of the budget (:mod:`rtinfer.optimize.budget`: each declared
   metric, the worst class's recall, top-1 agreement, and agreement on varied text for text
   kits), with fidelity (worst/mean cosine, SQNR) alongside.
3. **Quick latency**: every variant within budget on every engine that runs it (ONNX Runtime,
   OpenVINO, PyTorch eager for the original), at the goal's batch (1 for latency, 32 for
   throughput), in one short window each.
4. **Final measurement**: the best few within budget, the original on each engine, measured
   in interleaved rounds (same harness as ``bench-model``); speedups are the median of
   per-round p50 ratios, so a neighbour's burst slows both sides alike.
5. **Choice**: the fastest finalist within the budget (and the p99 objective when given).
   Over budget is never chosen; when nothing beats the original, the original on its fastest
   engine is the answer and the result says why. When no variant within budget was faster
   in the quick measurement, mixed precision is tried before the final rounds. The chosen model
   is evaluated on the held-out test split under the same limits (and on the kit's or
   ``extra_eval``'s set from outside the split, reported only), written as an artifact
   (recipe, figures, engine) with ``report.html`` and ``optimize.json`` beside it.

Each finished step is saved in a state folder under the cache; re-running the same command
after an interrupt continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._progress import Progress
from rtinfer.bench.interleave import FASTER, measure_interleaved, ratio
from rtinfer.bench.samples import at_shapes, real_batches
from rtinfer.engines import available_engines, load
from rtinfer.errors import OverBudgetError
from rtinfer.hardware import usable_cores
from rtinfer.models.imported import ImportedModel
from rtinfer.optimize import pipeline
from rtinfer.optimize.augment import varied_inputs
from rtinfer.optimize.budgeted import quantize_within_budget
from rtinfer.optimize.evaluate import (
    NO_LABELS,
    Budget,
    ExtraSet,
    beyond_split,
    evaluate_candidate,
    run_batches,
)
from rtinfer.optimize.passes import Recipe
from rtinfer.optimize.passes.quantize import Quantize
from rtinfer.optimize.report import search_result
from rtinfer.optimize.run import (
    Splits,
    budget_for,
    extra_set,
    loaded_kit,
    model_name,
    task_data,
)
from rtinfer.optimize.state import SearchState
from rtinfer.optimize.variants import Variant, quantized_variants, torch_variants

__all__ = ["optimize"]

GOALS = ("latency", "throughput")
_FINALISTS = 3          # variants within budget measured in the interleaved final rounds
_MIN_TRAIN_S = 5.0      # the least training time worth a distilled or pruned candidate


def optimize(
    model: Any = None,
    *,
    kit: Any = None,
    data: str | Path | None = None,
    max_drop: str | None = None,
    metric: str | None = None,
    min_agreement: float | None = None,
    class_recall: str | None = None,
    extra_eval: str | Path | None = None,
    slo_p99_ms: float | None = None,
    goal: str | None = None,
    time_budget_s: float = 900.0,
    engines: list[str] | None = None,
    threads: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    window_s: float = 0.5,
    resume: bool = True,
    shapes: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """See the module docstring. Returns a JSON-ready result (``kind: optimize``).

    ``goal`` and ``slo_p99_ms`` default to a task file's ``[objective]`` (else latency, no
    objective). ``shapes`` (e.g. ``{"image": (1, 3, 224, 224)}``) is the deployment's input
    size when it differs from the data's: latency is measured on the real test rows resized
    to it (:func:`~rtinfer.bench.samples.at_shapes`); accuracy is judged on the data as
    given."""
    spec = getattr(kit, "spec", None)  # a task: its declared objective
    goal = goal or getattr(spec, "goal", None) or "latency"
    if slo_p99_ms is None and spec is not None:
        slo_p99_ms = spec.objective_p99_ms
    if goal not in GOALS:
        raise ValueError(f"goal must be one of {GOALS}, got {goal!r}")
    if time_budget_s <= 0:
        raise ValueError(f"time budget must be positive, got {time_budget_s} s")
    # A malformed budget fails before any work.
    budget_for(max_drop, metric, metric or "metric", min_agreement, class_recall)
    say = progress or (lambda _msg: None)
    start = time.monotonic()
    deadline = start + time_budget_s
    original, splits, task, budget_metric = task_data(model, kit, data, metric)
    kit_name = getattr(kit, "name", kit)  # a kit name, or a loaded Kit (tests: small kits)
    budget = budget_for(max_drop, metric, budget_metric, min_agreement, class_recall)
    kit_obj = loaded_kit(kit)
    extra = extra_set(extra_eval, kit_obj, original, task)  # a bad file fails before any work
    usable = available_engines()
    chosen_engines = [e for e in (engines or usable) if e in usable]
    if engines and len(chosen_engines) < len(engines):
        missing = sorted(set(engines) - set(usable))
        raise ValueError(f"engine(s) {missing} are not installed here; available: {usable}")
    threads = threads or usable_cores()
    batch = 1 if goal == "latency" else 32
    # Latency at the data's own shapes: real test rows, text cut to each batch's longest
    # sentence (one sentence padded to the split's width would favour int8 unfairly), or
    # resized to the deployment's shapes when given (a bad --shape fails before any work).
    feeds = at_shapes(real_batches(splits["test"][0], batch), _fits(original, shapes or {}))
    state = SearchState.open(original, getattr(kit_obj, "fingerprint", getattr(kit, "path", kit)),
                             data, budget, goal, batch, threads, resume, chosen_engines, shapes)

    calibration = splits["calibration"][0]
    validation, val_targets = splits["validation"]
    say("float model on the validation split")
    varied_in = varied_inputs(kit_obj, "validation")  # text kits: the varied-agreement guard
    with load(original, "onnxruntime", threads, warmup=False) as s:
        reference = run_batches(s, validation)
        varied_ref = run_batches(s, varied_in) if varied_in is not None else None
    float_metrics = task(val_targets, reference) if task and val_targets is not None else {}
    budget = budget.resolve(list(float_metrics), reference,
                            labels=val_targets is not None and val_targets is not NO_LABELS,
                            varied=varied_in is not None)
    say(f"budget: {budget.describe()}" + (" (the default; --max-drop sets another)"
                                          if budget.default else ""))

    def judge(variant: Variant) -> dict[str, Any]:
        runtime = variant.runtime
        with load(variant.model, runtime, threads, warmup=False) as s:
            outputs = run_batches(s, validation)
            varied = None if varied_in is None or varied_ref is None else (
                varied_ref, run_batches(s, varied_in))
        ev = evaluate_candidate(outputs, reference, budget, targets=val_targets, metric=task,
                                float_metrics=float_metrics, varied=varied)
        return {**ev.to_dict(), "evaluated_on": runtime}

    variants: dict[str, Variant] = {}
    records: dict[str, dict[str, Any]] = {}
    skipped = [{"variant": t, "why": why} for t, why in _untried_techniques(kit_obj).items()]

    def consider(vid: str, label: str, build: Callable[[], Variant],
                 required: bool = False) -> None:
        if vid in state.variants:
            say(f"{label}: from the saved state")
            variant, record = state.restore(vid, build)
        elif not required and time.monotonic() > deadline - _reserve(time_budget_s):
            skipped.append({"variant": vid, "why": "time budget"})
            return
        else:
            say(f"{label}: building")
            try:
                variant = build()
            except Exception as exc:  # one variant's failure must not end the search
                skipped.append({"variant": vid, "why": f"{type(exc).__name__}: {exc}"})
                return
            say(f"{label}: accuracy on the validation split")
            try:
                record = {"validation": judge(variant)}
            except Exception as exc:  # one candidate's failure must not end the search
                skipped.append({"variant": vid, "why": f"judging it on {variant.runtime} "
                                                       f"failed: {type(exc).__name__}: {exc}"})
                return
            record["quick"] = {}
            # Over budget: timed once, on the engine that evaluated it, so the trade-off is
            # shown in the report; it is never a finalist.
            runs_on = (variant.engines(chosen_engines) if record["validation"]["within_budget"]
                       else [record["validation"]["evaluated_on"]])
            for engine in runs_on:
                say(f"{label}: quick latency on {engine}")
                record["quick"][engine] = _quick(variant.model, engine, threads, feeds,
                                                 window_s)
            state.save(variant, record)
        variants[vid] = variant
        records[vid] = record

    fp32 = Variant("fp32", "original (fp32)", [], original, False)
    consider("fp32", fp32.label, lambda: fp32, required=True)  # the baseline, always
    def refused(vid: str) -> bool:
        return vid in records and not records[vid]["validation"]["within_budget"]

    for vid, label, build in quantized_variants(original, calibration, engines=chosen_engines,
                                                refused=refused):
        consider(vid, label, build)
    left = deadline - _reserve(time_budget_s) - time.monotonic()
    train_s = min(300.0, 0.4 * left)
    for vid, label, build in torch_variants(kit_obj, original, seconds=max(train_s, 1.0),
                                            progress=say):
        if train_s < _MIN_TRAIN_S and vid not in state.variants:  # too little time to train
            skipped.append({"variant": vid, "why": "time budget"})  # one well enough
            continue
        consider(vid, label, build)
        if vid not in variants:
            continue
        derived = variants[vid]
        for qid, qlabel, qbuild in quantized_variants(
                derived.model, calibration, prefix=f"{vid}+", parent=vid,
                base_recipe=derived.recipe, engines=chosen_engines, refused=refused):
            consider(qid, qlabel, qbuild)
    if _mixed_may_pay(records, variants):
        best = _least_harmful(records, variants)
        if best is not None:
            def mixed(config: Quantize = best) -> Variant:
                res = quantize_within_budget(original, config, calibration, validation, budget,
                                             targets=val_targets, metric=task, threads=threads,
                                             varied=varied_in,
                                             deadline=deadline - _reserve(time_budget_s) / 2,
                                             progress=say)
                if res.model is None:
                    why = res.steps[-1]["what"] if res.steps else "over budget"
                    raise OverBudgetError(f"no mixed-precision model met the budget ({why}; "
                                          f"{budget.describe()})")
                v = Variant("int8-mixed", f"int8 mixed ({len(res.kept_in_float)} layers float)",
                            [res.config.to_dict()], res.model, True)
                state.extra["sensitivity"] = res.sensitivity[:30]
                state.extra["kept_in_float"] = res.kept_in_float
                return v
            consider("int8-mixed", "int8 mixed precision", mixed)

    say("final interleaved measurement")
    finals = _finalists(records, variants)
    # Fit the final rounds into what is left of the budget (each pair-round takes up to three
    # windows plus a warm-up), but never below 0.1 s windows: a choice needs a measurement.
    left = max(deadline - time.monotonic(), 0.0)
    final_window = min(window_s * 2, max(0.1, 0.6 * left / (len(finals) * pipeline.ROUNDS * 3.5)))
    final = _measure_final(finals, variants, threads, feeds, final_window, say, skipped)
    chosen = _choose(final, records, slo_p99_ms)
    result = search_result(original, kit_name, budget, goal, batch, threads, slo_p99_ms,
                           float_metrics, variants, records, final, chosen, skipped, state,
                           time_budget_s, start)
    result["measurement"]["inputs"] = {
        "what": "real test rows; text cut to each batch's longest sentence"
                + ("; resized to the deployment shapes given (accuracy on the data as given)"
                   if shapes else ""),
        "batches": len(feeds),
        "shapes": sorted({f"{k}{list(v.shape)}" for f in feeds for k, v in f.items()})[:8]}
    if kit_obj is not None:
        result["model"]["kit_size"] = kit_obj.meta.get("size", "full")
    say("held-out evaluation of the original and the chosen model")
    result["held_out"] = _held_out(variants["fp32"], variants[chosen["variant"]], splits, task,
                                   budget, threads, extra, kit_obj)
    if out is not None:
        _write(result, variants[chosen["variant"]], chosen, out,
               name or model_name(model, original, kit_name), threads,
               kit_obj, original=original)
    state.finish(result)
    return result


def _fits(model: ImportedModel, shapes: Mapping[str, Any]) -> Mapping[str, Any]:
    """``shapes``, once every fixed axis of the model's inputs agrees with them."""
    for t in model.spec.inputs:
        want = shapes.get(t.name)
        if want is None or len(want) != len(t.shape):  # at_shapes says what is wrong
            continue
        fixed = [f"axis {i} is fixed at {d}" for i, (d, w) in enumerate(zip(t.shape, want,
                                                                          strict=True))
                 if isinstance(d, int) and d != int(w)]
        if fixed:
            raise ValueError(f"--shape {t.name}={','.join(map(str, want))}: the model's input "
                             f"{t.name} is {list(t.shape)}: {', '.join(fixed)} (only its "
                             f"named, dynamic axes can take another size)")
    return shapes


def _untried_techniques(kit: Any) -> dict[str, str]:
    """The torch-side techniques this search cannot try, and why."""
    if kit is None:
        why = "needs a torch model and a training split: describe them in a task file"
        return {"pruning": why, "distillation": why}
    return dict(getattr(kit, "techniques_skipped", {}))


def _reserve(budget_s: float) -> float:
    """Time kept back from building variants for the final measurement and the write-up."""
    return min(120.0, 0.25 * budget_s)


def _quick(model: ImportedModel, engine: str, threads: int,
           feeds: list[dict[str, np.ndarray]], window_s: float) -> dict[str, Any]:
    """One short measurement (up to three stable windows) on the real-shape batches."""
    try:
        with load(model, engine, threads, warmup=feeds[0]) as s:
            row = measure_interleaved({engine: s}, feeds, rounds=1, window_s=window_s,
                                      max_windows=3)[engine]
    except Exception as exc:  # an engine that cannot run a variant is a finding, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"}
    lat = row["latency_ms"]
    return {"p50_ms": lat["p50"], "p99_ms": lat["p99"], "samples_per_s": row["samples_per_s"]}


def _mixed_may_pay(records: Mapping[str, dict[str, Any]],
                   variants: Mapping[str, Variant]) -> bool:
    """Whether mixed precision is worth its build time: no variant within budget beat the
    original's quick latency by more than noise, yet some int8 variant of the original did —
    speed the budget refused, which keeping the most sensitive layers in float may recover
    (one quick window is noisy, so any int8 variant counts, not only the static one mixed
    precision starts from). When no int8 variant is faster, nothing is built."""
    def best(rec: Mapping[str, Any]) -> float:
        return min((q["p50_ms"] for q in rec["quick"].values() if "p50_ms" in q),
                   default=float("inf"))

    original = best(records["fp32"])
    faster = {v for v, r in records.items() if v != "fp32" and best(r) < float("inf")
              and pipeline.faster(original / best(r))}
    if any(records[v]["validation"]["within_budget"] for v in faster):
        return False
    # Mixed precision starts from ONNX static int8: LiteRT's speed says nothing about it.
    return any(variants[v].quantized and variants[v].parent == "fp32"
               and variants[v].recipe[-1].get("engine") != "litert" for v in faster)


def _least_harmful(records: Mapping[str, dict[str, Any]],
                   variants: Mapping[str, Variant]) -> Quantize | None:
    """The static int8 setting that uses the least of the budget: the base for mixed
    precision."""
    static = [(r["validation"]["budget_used"], v) for v, r in records.items()
              if variants[v].quantized and variants[v].recipe[-1].get("method") == "static"
              and variants[v].recipe[-1].get("engine") != "litert"]  # no layer fallback there
    if not static:
        return None
    _, vid = min(static)
    return Quantize.from_dict(variants[vid].recipe[-1])


def _finalists(records: Mapping[str, dict[str, Any]],
               variants: Mapping[str, Variant]) -> list[tuple[str, str]]:
    """(variant, engine) pairs for the final rounds: the original on every engine it ran on,
    and the quickest few within budget (by their quick p50)."""
    pairs = [("fp32", e) for e, q in records["fp32"]["quick"].items() if "p50_ms" in q]
    within = sorted(
        ((q["p50_ms"], v, e) for v, r in records.items() if v != "fp32"
         and r["validation"]["within_budget"] for e, q in r["quick"].items() if "p50_ms" in q))
    pairs += [(v, e) for _, v, e in within[:_FINALISTS]]
    return pairs


def _measure_final(pairs: list[tuple[str, str]], variants: Mapping[str, Variant], threads: int,
                   feeds: list[dict[str, np.ndarray]], window_s: float, say: Progress,
                   skipped: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The finalists in interleaved rounds against the original on ONNX Runtime (else its
    first engine); a finalist its engine cannot run is left out, with why, in ``skipped``."""
    originals = sorted((p for p in pairs if p[0] == "fp32"), key=lambda p: p[1] != "onnxruntime")
    if not originals:
        raise RuntimeError("the original model ran on none of the engines in the quick "
                           "measurement (its rows in the candidate table say why); nothing "
                           "can be compared")
    out, left_out = pipeline.measure({(v, e): (variants[v].model, e) for v, e in pairs}, feeds,
                                     threads=threads, baseline=originals[0],
                                     fallbacks=originals[1:], rounds=pipeline.ROUNDS,
                                     window_s=window_s, progress=say)
    skipped += [{"variant": f"{v}@{e}", "why": f"final rounds: {why}"}
                for (v, e), why in left_out.items()]
    for key, row in out.items():
        row["speedup_vs_original_ort"] = row.pop("speedup")
        if ("fp32", "torch") in out:
            row["speedup_vs_torch_eager"] = ratio(out, ("fp32", "torch"), key)
    return out


def _choose(final: Mapping[tuple[str, str], dict[str, Any]],
            records: Mapping[str, dict[str, Any]], slo: float | None) -> dict[str, Any]:
    """The fastest finalist within budget (and SLO); the original wins unless beaten by more
    than measurement noise."""
    def ok(key: tuple[str, str]) -> bool:
        within = key[0] == "fp32" or records[key[0]]["validation"]["within_budget"]
        return within and (slo is None or final[key]["latency_ms"]["p99"] <= slo)

    originals = [k for k in final if k[0] == "fp32"]
    best_original = max(originals, key=lambda k: final[k]["speedup_vs_original_ort"])
    others = [k for k in final if k[0] != "fp32" and ok(k)]
    best = max(others, key=lambda k: final[k]["speedup_vs_original_ort"], default=None)
    gain = (final[best]["speedup_vs_original_ort"]
             / final[best_original]["speedup_vs_original_ort"]) if best else 0.0
    if best is not None and pipeline.faster(gain):
        why = (f"fastest within the budget: {gain:.2f}x the original on its fastest engine "
               f"({best_original[1]})")
        key = best
    else:
        key = best_original
        why = ("no optimized variant within the budget beats the original by more than "
               f"{FASTER - 1:.0%} on this machine" + (f" (best: {best[0]} on {best[1]}, "
                                                       f"{gain:.2f}x)" if best else "")
               + f"; the original on {key[1]} is the answer")
    meets_slo = slo is None or final[key]["latency_ms"]["p99"] <= slo
    if not meets_slo:
        why += f"; note: no candidate met the p99 objective of {slo:g} ms"
    return {"variant": key[0], "engine": key[1], "why": why, "meets_slo": meets_slo,
            "original_engine": best_original[1]}


def _held_out(original: Variant, chosen: Variant, splits: Splits, task: Any, budget: Budget,
              threads: int, extra: ExtraSet | None, kit: Any) -> dict[str, Any]:
    inputs, targets = splits["test"]
    varied_in = varied_inputs(kit, "test")
    with load(original.model, "onnxruntime", threads, warmup=False) as s0, \
            load(chosen.model, chosen.runtime, threads, warmup=False) as s1:
        ref, got = run_batches(s0, inputs), run_batches(s1, inputs)
        varied = None if varied_in is None else (run_batches(s0, varied_in),
                                                 run_batches(s1, varied_in))
        beyond = beyond_split(extra, partial(run_batches, s0), partial(run_batches, s1))
    labelled = task is not None and targets is not None
    # The same limits, reported on data the choice never saw (not used to choose).
    return pipeline.held_out(ref, got, label="chosen", budget=budget,
                             targets=targets if labelled else None,
                             metric=task if labelled else None, varied=varied, beyond=beyond)


def _write(result: dict[str, Any], variant: Variant, chosen: Mapping[str, Any],
           out: str | Path, name: str, threads: int, kit: Any = None,
           original: Any = None) -> None:
    from rtinfer.optimize.report import render_html

    art = pipeline.write(
        variant.model, out, name, recipe=Recipe.of(variant.recipe), held=result["held_out"],
        label="chosen", performance={k: v for k, v in result["chosen"].items() if k != "why"},
        engine=str(chosen["engine"]), threads=threads, task=kit,
        measurements={"budget": result["budget"]}, reference=original)
    result["artifact"] = str(art.path)
    folder = Path(out) / name
    result["report"] = str(folder / "report.html")
    (folder / "report.html").write_text(render_html(result))
    (folder / "optimize.json").write_text(
        json.dumps(result, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
