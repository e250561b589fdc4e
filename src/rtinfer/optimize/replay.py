"""Rebuild a model from its recipe, and check it against the version it claims to be.

    rebuilt = rebuild(Recipe.from_dict(manifest["recipe"]), task)
    check = replay("repo/intent/3", task)   # {"equal": True, "same_hash": True, ...}

The passes run in order from the task's original model, on the task's own splits, as the job
that wrote the version ran them: pruning and distillation on the torch module (trained for the
recorded steps with the recorded seed), QAT on the module under the next quantize pass's
simulated int8, quantization with the calibration split. A deterministic recipe (quantization
of the original) gives the same files, byte for byte; a trained one gives the same outputs
within tolerance on the task's test split (training threads and library versions can move the
last bits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtinfer._hashing import sha256_file
from rtinfer._progress import Progress
from rtinfer.bench.inprocess import SCHEMA
from rtinfer.models.imported import ImportedModel
from rtinfer.optimize import pipeline
from rtinfer.optimize.passes import Recipe
from rtinfer.optimize.passes.distill import Distill
from rtinfer.optimize.passes.prune import Prune
from rtinfer.optimize.passes.qat import QAT
from rtinfer.optimize.passes.quantize import Quantize, quantize

__all__ = ["TOLERANCE", "rebuild", "replay", "trains"]

#: What "the same outputs" means for a trained recipe, per float output on the test split.
TOLERANCE = {"cosine_min": 0.999, "top1_agreement": 0.99}


def rebuild(recipe: Recipe, task: Any, *, threads: int | None = None,
            progress: Progress | None = None) -> ImportedModel:
    """The model ``recipe`` makes from ``task``'s original (a task or kit)."""
    say = progress or (lambda _msg: None)
    model: ImportedModel = task.original_model()
    module: Any = None  # the torch module the torch-side passes left, when they ran
    passes = list(recipe.passes)
    for i, step in enumerate(passes):
        say(f"replaying {i + 1}/{len(passes)}: {step.describe()}")
        if isinstance(step, Prune | Distill):
            if module is None and i > 0:
                raise ValueError(f"recipe step {i + 1} ({step.describe()}) trains a torch "
                                 "module after a pass that left none; it cannot be replayed")
            model, module = _torch_pass(step, task, module, threads, say)
        elif isinstance(step, QAT):
            after = passes[i + 1] if i + 1 < len(passes) else None
            if not isinstance(after, Quantize):
                raise ValueError(f"recipe step {i + 1} is QAT, which fine-tunes for the "
                                 "quantize pass after it; this recipe has none")
            from rtinfer.optimize.passes.qat import finetune

            model = finetune(model, after, step, task.split("train").inputs,
                             task.split("calibration").inputs, threads=threads, progress=say)
            module = None
        elif isinstance(step, Quantize):
            calibration = task.split("calibration").inputs if step.method == "static" else None
            model = quantize(model, step, calibration)
            module = None
        else:
            raise ValueError(f"recipe step {i + 1}: no replay for {type(step).__name__}")
    return model


def trains(recipe: Recipe) -> bool:
    """Whether a recipe trains weights (distillation, QAT, fine-tuned structured pruning):
    its replay matches within tolerance, not bit for bit."""
    return any(isinstance(p, Distill | QAT) or (isinstance(p, Prune) and p.structured
                                                 and p.finetune_steps > 0)
               for p in recipe.passes)


def _torch_pass(step: Prune | Distill, task: Any, module: Any, threads: int | None,
                say: Progress) -> tuple[ImportedModel, Any]:
    from rtinfer.optimize.passes.distill import distill
    from rtinfer.optimize.passes.prune import prune

    if isinstance(step, Prune):
        res = prune(module, step, kit=task, threads=threads or 2, measure=False, progress=say)
    else:
        res = distill(module, step, kit=task, threads=threads or 2, measure=False,
                      progress=say)
    return res.model, res.module


def replay(version: str | Path, task: Any, *, threads: int | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Rebuild an artifact version from its manifest's recipe on ``task`` and compare: the
    files' hashes, else the outputs on the test split against :data:`TOLERANCE`."""
    from rtinfer.deploy.artifact import load_artifact
    from rtinfer.engines import load
    from rtinfer.optimize.evaluate import fidelity, run_batches

    art = load_artifact(version)
    recipe = Recipe.from_dict(art.manifest["recipe"])
    recorded = art.manifest.get("task") or {}
    given = pipeline.provenance(task) or {}
    report: dict[str, Any] = {
        "schema": SCHEMA, "kind": "replay", "version": str(art.path),
        "recipe": recipe.to_dict(), "describe": recipe.describe(),
        "task": {"given": given, "recorded": recorded}}
    differs = [k for k in ("name", "fingerprint", "size", "key")
               if recorded.get(k) and given.get(k) and recorded[k] != given[k]]
    kinds = [bool(d.get("fingerprint")) for d in (recorded, given) if d]
    if len(set(kinds)) > 1:
        differs.insert(0, "kind (a task file against a kit)")
    if differs:
        report["warning"] = (f"the version was made from another task (its {differs[0]} "
                             "differs; a kit's key also changes with its packages' versions): "
                             "a different model or data gives a different result")
    rebuilt = rebuild(recipe, task, threads=threads, progress=progress)
    hashes = {str(f.relative_to(rebuilt.path.parent)): sha256_file(f) for f in rebuilt.files}
    stored = {k: v["sha256"] for k, v in art.manifest["files"].items() if k in hashes}
    report["same_hash"] = len(stored) == len(hashes) and stored == hashes
    engine = art.engine or "onnxruntime"
    inputs = task.split("test").inputs
    with load(art.model, engine, threads, warmup=False) as s0, \
            load(rebuilt, engine, threads, warmup=False) as s1:
        outputs = fidelity(run_batches(s0, inputs), run_batches(s1, inputs))
    report["outputs"] = {"engine": engine, "samples": len(next(iter(inputs.values()))),
                         "fidelity": outputs, "tolerance": TOLERANCE}
    if trains(recipe):
        report["rule"] = "a trained recipe: the same outputs within the tolerance"
        report["equal"] = report["same_hash"] or all(
            row.get(k, 1.0) >= v for row in outputs.values() for k, v in TOLERANCE.items())
    else:
        report["rule"] = "a deterministic recipe: the same files, byte for byte"
        report["equal"] = report["same_hash"]
    report["rebuilt_files"] = hashes
    return report
