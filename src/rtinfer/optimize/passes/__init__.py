"""The passes a model goes through, registered by name, and the recipe that lists them.

A pass is a frozen dataclass (:class:`~rtinfer.optimize.passes.quantize.Quantize`,
:class:`~rtinfer.optimize.passes.prune.Prune`, :class:`~rtinfer.optimize.passes.distill.Distill`,
:class:`~rtinfer.optimize.passes.qat.QAT`) whose ``to_dict()`` carries its name (``"pass"``),
its own version and every field, and whose ``from_dict()`` reads that back. A :class:`Recipe`
is the ordered list of passes that made a model; it is what an artifact's manifest records and
what :func:`rtinfer.optimize.replay.rebuild` runs again::

    recipe = Recipe.from_dict(manifest["recipe"])   # {"format_version": 1, "passes": [...]}
    recipe.passes                                  # (Distill(...), Quantize(...))

A trained pass records what its run did, not only what it was asked: a fine-tune cut short by
its time limit is written with the step counts it reached (``stopped_at``) and no time limit,
so a replay on another machine trains exactly as far.

Later passes register themselves with :func:`register` (``"module:Class"``, imported on first
use so reading a recipe does not import torch).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPE_FORMAT", "Recipe", "pass_class", "pass_from_dict", "pass_names", "register"]

#: The recipe layout this rtinfer writes; it reads this and older ones.
RECIPE_FORMAT = 1

_REGISTRY: dict[str, str] = {
    "quantize": "rtinfer.optimize.passes.quantize:Quantize",
    "prune": "rtinfer.optimize.passes.prune:Prune",
    "distill": "rtinfer.optimize.passes.distill:Distill",
    "qat": "rtinfer.optimize.passes.qat:QAT",
}


def register(name: str, target: str) -> None:
    """Make the pass class ``target`` (``"package.module:Class"``) readable as ``name``."""
    if ":" not in target:
        raise ValueError(f"a pass is registered as 'package.module:Class', got {target!r}")
    if _REGISTRY.get(name, target) != target:
        raise ValueError(f"a pass named '{name}' is already registered ({_REGISTRY[name]})")
    _REGISTRY[name] = target


def pass_names() -> list[str]:
    return sorted(_REGISTRY)


def pass_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown pass '{name}' in the recipe; this rtinfer knows "
                         f"{pass_names()} (a newer rtinfer may have written it)")
    module, cls = _REGISTRY[name].split(":")
    found: type = getattr(importlib.import_module(module), cls)
    return found


def pass_from_dict(data: Mapping[str, Any]) -> Any:
    """The pass a recipe entry describes (its ``"pass"`` names the class)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("pass"), str):
        raise ValueError(f"a recipe entry is an object with a 'pass' name, got {data!r}")
    return pass_class(data["pass"]).from_dict(dict(data))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Recipe:
    """The passes that made a model, in order; empty for the original itself."""

    passes: tuple[Any, ...] = ()

    @classmethod
    def of(cls, entries: Sequence[Mapping[str, Any] | Any]) -> Recipe:
        """A recipe from pass objects or their dicts (a variant's recipe)."""
        return cls(tuple(pass_from_dict(e) if isinstance(e, Mapping) else e for e in entries))

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": RECIPE_FORMAT, "passes": [p.to_dict() for p in self.passes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        version = data.get("format_version") if isinstance(data, Mapping) else None
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"not a recipe (no integer format_version): {data!r}")
        if version > RECIPE_FORMAT:
            raise ValueError(f"recipe format {version} is newer than this rtinfer reads "
                             f"({RECIPE_FORMAT}); upgrade rtinfer")
        entries = data.get("passes")
        if not isinstance(entries, list):
            raise ValueError("a recipe's 'passes' is a list of pass entries")
        return cls.of(entries)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        if not self.passes:
            return "the original, unchanged"
        return " → ".join(p.describe() for p in self.passes)
