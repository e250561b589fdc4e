"""A search's finished steps, saved under the cache so an interrupted ``rtinfer optimize``
continues where it stopped: each variant's file, recipe and record, keyed by everything that
changes their outcome (the model, the task or data, the budget, goal, batch, threads, engines,
the input shapes latency is measured at and :data:`SEARCH_VERSION`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rtinfer._cache import cache_dir
from rtinfer.models import import_model
from rtinfer.models.imported import ImportedModel
from rtinfer.optimize.evaluate import Budget
from rtinfer.optimize.variants import Variant

__all__ = ["SEARCH_VERSION", "SearchState"]

# Part of the saved state's key: bump when the variants a search builds change, so a resumed
# search never reuses a variant built by an older recipe.
SEARCH_VERSION = 8  # 4: tasks; MLP prune/distill; 5: recipes record the steps trained;
# 6: variants record their file (.onnx or .tflite); 7: pruning fine-tunes on the original's
# soft targets too; 8: text models quantized for OpenVINO are padded to length buckets


class SearchState:
    """Finished steps of one search, keyed by everything that changes their outcome."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.variants: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}
        self.resumed: list[str] = []
        index = folder / "state.json"
        if index.is_file():
            saved = json.loads(index.read_text())
            self.variants, self.extra = saved["variants"], saved.get("extra", {})

    @classmethod
    def open(cls, model: ImportedModel, kit: Any, data: Any, budget: Budget, goal: str,
             batch: int, threads: int, resume: bool, engines: list[str],
             shapes: Mapping[str, Any] | None = None) -> SearchState:
        # The engines decide which variants exist (NNCF's need OpenVINO): part of the key; so
        # do the shapes latency is measured at (the quick figures are saved).
        measured_at = [sorted((k, list(v)) for k, v in shapes.items())] if shapes else []
        key = hashlib.sha256(json.dumps(
            [SEARCH_VERSION, model.source.sha256, kit, str(data), budget.to_dict()["limits"],
             budget.metric, goal, batch, threads, sorted(engines), *measured_at],
            default=str).encode()).hexdigest()[:16]
        folder = cache_dir() / "optimize" / key
        if not resume and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder)

    def save(self, variant: Variant, record: dict[str, Any]) -> None:
        file = None
        if variant.id != "fp32":
            file = f"{variant.id}{variant.model.path.suffix}"  # .onnx, or LiteRT's .tflite
            shutil.copyfile(variant.model.path, self.folder / file)
        self.variants[variant.id] = {"label": variant.label, "recipe": variant.recipe,
                                     "file": file,
                                     "quantized": variant.quantized, "parent": variant.parent,
                                     "record": record}
        self._flush()

    def restore(self, vid: str, build: Callable[[], Variant]) -> tuple[Variant, dict[str, Any]]:
        """A finished variant and its record; the original has no saved file (its builder
        returns it as given, torch module included)."""
        saved = self.variants[vid]
        self.resumed.append(vid)
        if vid == "fp32":
            return build(), saved["record"]
        variant = Variant(vid, saved["label"], saved["recipe"],
                          import_model(self.folder / saved["file"]), saved["quantized"],
                          saved["parent"])
        return variant, saved["record"]

    def finish(self, result: Mapping[str, Any]) -> None:
        self.extra["last_result"] = {"chosen": result["chosen"]["id"]}
        self._flush()

    def _flush(self) -> None:
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps({"variants": self.variants, "extra": self.extra},
                                  default=str))
        tmp.replace(self.folder / "state.json")
