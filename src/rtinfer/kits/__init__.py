"""Ready-made scenarios: a real model, its data, pre-processing, metric and latency objective.

    kit = rtinfer.kits.load("fraud")          # builds once (a few minutes), then cached
    kit.labels                                 # ["legit", "fraud"]
    inputs = kit.preprocess([transaction])     # raw record -> {"features": (1, F) float32}
    session = rtinfer.load(kit.model_path)
    kit.evaluate_session(session, "test")      # {"roc_auc": …, "pr_auc": …, …}

    print(rtinfer.kits.task_file(kit))         # the kit as a task file (rtinfer kits show)

Kits: ``fraud`` (financial risk), ``intent`` and ``intent-zh`` (customer service, in English and
in Simplified Chinese), ``perception`` (vision).
Each builds deterministically from fixed seeds into ``$RTINFER_CACHE/kits/`` (see
:mod:`rtinfer.kits.base`).
"""

from __future__ import annotations

import importlib
from typing import Any

from rtinfer.errors import KitNotBuiltError
from rtinfer.kits.base import SIZES, Kit, KitRecipe, Progress, Split, build_kit, kit_folder
from rtinfer.kits.task_file import task_file

__all__ = ["KIT_NAMES", "SIZES", "Kit", "KitRecipe", "Split", "kit_status", "load", "recipe",
           "task_file"]

_MODULES = {"fraud": "rtinfer.kits.fraud", "intent": "rtinfer.kits.intent",
            "intent-zh": "rtinfer.kits.intent_zh", "perception": "rtinfer.kits.perception"}
KIT_NAMES = tuple(_MODULES)


def recipe(name: str) -> KitRecipe:
    if name not in _MODULES:
        raise ValueError(f"unknown kit '{name}'; choose one of {list(KIT_NAMES)}")
    found: KitRecipe = importlib.import_module(_MODULES[name]).RECIPE
    return found


def load(name: str, *, size: str = "full", build: bool = True, force: bool = False,
         progress: Progress | None = None) -> Kit:
    """The built kit ``name``; builds it first (or raises, with ``build=False``) if needed."""
    r = recipe(name)
    if not build and not (kit_folder(r, size) / "kit.json").is_file():
        raise KitNotBuiltError(
            f"kit '{name}' ({size}) is not built yet; build it once (cached) with: rtinfer kits "
            f"build {name}" + (" --small" if size == "small" else "")
        )
    return build_kit(r, size, force=force, progress=progress)


def kit_status(size: str = "full") -> list[dict[str, Any]]:
    """One row per kit: name, description, metric, objective and whether it is built."""
    rows = []
    for name in KIT_NAMES:
        r = recipe(name)
        folder = kit_folder(r, size)
        rows.append({"name": name, "description": r.description, "metric": r.metric,
                     "objective_p99_ms": r.objective_p99_ms,
                     "built": (folder / "kit.json").is_file(), "path": str(folder)})
    return rows
