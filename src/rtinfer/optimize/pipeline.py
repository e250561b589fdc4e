"""The tail every job shares, from a built candidate to a written version.

``quantize``, ``prune``, ``distill`` and ``optimize`` differ in how they make candidates; from
there on they go through the same steps, defined once here:

1. :func:`held_out`: the candidate against the original on the held-out test split, under the
   job's budget (every declared metric, the guards), with fidelity and the set from outside
   the split, reported;
2. :func:`measure`: the original and the candidates timed in interleaved rounds
   (:mod:`rtinfer.bench.interleave`), each on its engine; a candidate an engine cannot run is
   left out with the reason, never the end of the job;
3. :func:`faster`: the one rule for "faster than noise";
4. :func:`write`: the version (:func:`rtinfer.deploy.artifact.save_artifact`) with its recipe
   (:class:`~rtinfer.optimize.passes.Recipe`), the held-out figures, the timing, the task it
   came from, and the serving settings ``rtinfer serve`` reads beside it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rtinfer._progress import Progress
from rtinfer.bench.interleave import FASTER, measure_interleaved, ratio
from rtinfer.optimize.evaluate import Budget, Metric, evaluate_candidate, fidelity
from rtinfer.optimize.passes import RECIPE_FORMAT, Recipe

__all__ = ["ROUNDS", "faster", "held_out", "measure", "provenance", "write"]

Outputs = Mapping[str, np.ndarray]
ROUNDS = 3  # interleaved rounds of a job's final measurement
K = TypeVar("K", bound=Hashable)


def faster(speedup: float) -> bool:
    """Whether a measured speedup is more than measurement noise (:data:`FASTER`)."""
    return speedup >= FASTER


def held_out(reference: Outputs, candidate: Outputs, *, label: str, budget: Budget,
             targets: np.ndarray | None, metric: Metric | None,
             varied: tuple[Outputs, Outputs] | None = None,
             beyond: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The held-out report: ``original`` and ``label`` metrics (with labels), the drop of the
    budget metric, fidelity, and the budget's verdict on data the choice never saw."""
    out: dict[str, Any] = {"samples": len(next(iter(reference.values()))),
                           "fidelity": fidelity(reference, candidate)}
    if metric is not None and targets is not None:
        out["original"] = metric(targets, reference)
        out[label] = metric(targets, candidate)
        if budget.metric in out["original"] and budget.metric in out[label]:
            out["drop"] = out["original"][budget.metric] - out[label][budget.metric]
    out["budget"] = evaluate_candidate(candidate, reference, budget, targets=targets,
                                       metric=metric, float_metrics=out.get("original"),
                                       varied=varied).to_dict()
    if beyond is not None:
        out["beyond_split"] = dict(beyond)
    return out


def measure(candidates: Mapping[K, tuple[Any, str]],
            feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]], *,
            threads: int | None, baseline: K | None = None, fallbacks: Sequence[K] = (),
            rounds: int = ROUNDS,
            window_s: float = 0.5, progress: Progress | None = None
            ) -> tuple[dict[K, dict[str, Any]], dict[K, str]]:
    """Time ``{key: (model, engine)}`` in interleaved rounds on ``feeds`` (one batch, or a
    list used in turn: real text lengths); returns each row
    (:func:`~rtinfer.bench.interleave.measure_interleaved`'s, plus ``speedup`` against
    ``baseline`` — the first key by default; when it cannot run, the first of ``fallbacks``
    that can — as the median of per-round p50 ratios, and the per-round ratios) and the keys
    left out with why (an engine that cannot load or run one). A baseline must run."""
    from rtinfer.engines import Session, load

    say = progress or (lambda _msg: None)
    bases = [next(iter(candidates)) if baseline is None else baseline, *fallbacks]
    batches = [dict(feeds)] if isinstance(feeds, Mapping) else [dict(f) for f in feeds]
    sessions: dict[K, Session] = {}
    left_out: dict[K, str] = {}
    try:
        for key, (model, engine) in candidates.items():
            try:  # one real call: a candidate its engine cannot run is left out
                sessions[key] = load(model, engine, threads, warmup=batches[0])
            except Exception as exc:  # one engine failing one candidate ends nothing
                left_out[key] = f"cannot run on {engine}: {type(exc).__name__}: {exc}"
                say(f"{key}: {left_out[key]}; left out of the measurement")
        base = next((b for b in bases if b in sessions), None)
        if base is None:
            why = "; ".join(f"{b}: {left_out.get(b)}" for b in bases)
            raise RuntimeError(f"no baseline runs ({why}); nothing can be compared")
        rows = measure_interleaved(sessions, batches, rounds=rounds, window_s=window_s,
                                   progress=say)
    finally:
        for s in sessions.values():
            s.close()
    for key, row in rows.items():
        row["speedup"] = ratio(rows, base, key)
        row["speedup_per_round"] = [b / o for b, o in zip(
            rows[base]["round_p50_ms"], row["round_p50_ms"], strict=True)]
    return rows, left_out


def write(model: Any, out: str | Path, name: str, *,
          recipe: Recipe | Sequence[Mapping[str, Any]], held: Mapping[str, Any], label: str,
          performance: Mapping[str, Any], engine: str | None, threads: int | None,
          task: Any = None, measurements: Mapping[str, Any] | None = None,
          reference: Any = None) -> Any:
    """Write ``model`` as the next version of ``out/name`` with what the job found; returns
    the :class:`~rtinfer.deploy.artifact.Artifact`.

    ``reference``: the original ``model`` was judged against. Unless ``model`` is that
    original, it stays addressable beside it: the version of ``out/name`` that already holds
    it, else a new version written first, and ``model``'s manifest names it (``"reference":
    {"version": N, "sha256": ...}``), which the server's online accuracy guard shadows it
    with (:mod:`rtinfer.serve.guard`).

    ``engine`` is the version's own (its manifest's ``deployment``); ``threads`` go to the
    model's ``config.pbtxt``, which Triton and ``rtinfer serve`` read for every version (None:
    serving shares the cores). The model folder's
    ``rtinfer.json`` gets how to pre-process raw inputs — a task's recorded pre-processing or
    a kit's name and size, else none — and loses any folder-wide ``engine`` or ``threads``,
    which would override every version's own. ``recipe``: a :class:`Recipe`, or pass dicts
    as a job recorded them (a distillation into a given student is recorded, not replayable).
    """
    from rtinfer.deploy.artifact import save_artifact
    from rtinfer.deploy.settings import merge_settings, write_settings

    folder = Path(out) / name
    merge_settings(folder, {})  # a broken settings file fails before anything is written
    settings: dict[str, Any] = {}
    if hasattr(task, "raw_settings"):  # a task file: its own pre-processing, if any
        settings["raw"] = task.raw_settings(folder) or None
    elif task is not None:  # a built-in kit: the server pre-processes its raw inputs
        settings.update(kit=task.name, kit_size=task.meta.get("size", "full"))
    unset = tuple(k for k in ("raw", "kit", "kit_size") if settings.get(k) is None)
    drop = ("engine", "threads", *unset)
    entries = recipe.to_dict() if isinstance(recipe, Recipe) else {
        "format_version": RECIPE_FORMAT, "passes": [dict(p) for p in recipe]}
    ref = None
    if reference is not None and reference is not model:
        sha = _sha(reference)
        if sha != _sha(model):
            ref = _reference(folder, reference, sha, held, threads, task)
    art = save_artifact(
        model, out, name, recipe=entries,
        measurements={"accuracy": held.get(label, {}),
                      "accuracy_original": held.get("original", {}),
                      "fidelity": {"held_out": held["fidelity"]},
                      "performance": dict(performance), **(measurements or {})},
        threads=threads, engine=engine, task=provenance(task), reference=ref)
    write_settings(folder, settings, drop=drop)
    return art


def _sha(model: Any) -> str:
    from rtinfer._hashing import sha256_file

    return sha256_file(model.path)


def _reference(folder: Path, original: Any, sha: str, held: Mapping[str, Any],
               threads: int | None, task: Any) -> dict[str, Any]:
    """The version of ``folder`` that holds ``original`` (file hash ``sha``; written now when
    none does)."""
    from rtinfer.deploy.artifact import MANIFEST, _versions, save_artifact

    for version in reversed(_versions(folder)):
        try:
            manifest = json.loads((folder / str(version) / MANIFEST).read_text())
            same = manifest["files"][manifest["model_file"]]["sha256"] == sha
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same:
            return {"version": version, "sha256": sha}
    art = save_artifact(original, folder.parent, folder.name,
                        measurements={"accuracy": held.get("original", {}),
                                      "role": "reference: the original later versions were "
                                              "judged against"},
                        threads=threads, task=provenance(task))
    return {"version": int(art.path.name), "sha256": sha}


def provenance(task: Any) -> dict[str, Any] | None:
    """What the manifest records of the task a version came from (``rtinfer replay`` checks
    it): its name, a task file's fingerprint, a kit's size and build key."""
    if task is None:
        return None
    meta = getattr(task, "meta", {})
    return {"name": getattr(task, "name", None),
            "fingerprint": getattr(task, "fingerprint", None),
            "size": meta.get("size"), "key": meta.get("key")}
