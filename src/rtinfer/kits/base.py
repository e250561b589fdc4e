"""What a kit is, how it is built once and cached, and how it is loaded.

A kit module (``fraud``, ``intent``, ``perception``) defines a :class:`KitRecipe`: a name, a
metric and latency objective, a ``build(folder, size, progress)`` that writes the data splits
and the float model(s) into ``folder``, and a ``preprocess(meta, raw_items)`` that turns raw
items into model inputs. Building happens once per content key (kit, size, code version, data
package versions) under ``<cache>/kits/<name>-<size>-<key>/``, written to a staging folder and
renamed into place. Files on disk are numpy ``.npz`` (loaded with ``allow_pickle=False``), JSON
and rtinfer artifacts — nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._cache import cache_dir
from rtinfer._progress import Progress

__all__ = ["SIZES", "Kit", "KitRecipe", "Split", "build_kit", "kit_folder", "torch_threads"]

SIZES = ("full", "small")


@dataclass(frozen=True)
class KitRecipe:
    """How to build and use one kit; see the module docstring."""

    name: str
    description: str
    task: str                      # "binary" or "multiclass"
    metric: str                    # the headline metric, e.g. "pr_auc" or "top1"
    objective_p99_ms: float
    version: int                   # bump when the build changes its output
    build: Callable[[Path, str, Progress], dict[str, Any]]
    preprocess: Callable[[Mapping[str, Any], Sequence[Any]], dict[str, np.ndarray]]
    evaluate: Callable[[Mapping[str, Any], np.ndarray, Mapping[str, np.ndarray]], dict[str, float]]
    packages: tuple[str, ...] = ()  # distributions whose data the build reads
    # Evidence from outside the split rule: (what it is, model inputs, targets) for a built
    # kit. Reported next to the held-out split, never used to choose; made on demand (cheap),
    # so it is not part of the build or its key.
    beyond: Callable[[Kit], tuple[str, dict[str, np.ndarray], np.ndarray] | None] | None = None
    # ``evaluate`` as a task file names its metric: a "package.module:function" called as
    # function(targets, outputs), named like the headline (``rtinfer kits show`` prints it).
    task_metric: str | None = None

    def key(self, size: str) -> str:
        versions = {}
        for dist in self.packages:
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = "missing"
        blob = json.dumps({"kit": self.name, "size": size, "version": self.version,
                           "packages": versions, "torch": _version("torch")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Split:
    """One data split: model inputs, integer targets and (where kept) the raw items."""

    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    raw: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Kit:
    """A built kit: ``kit.preprocess(raw) -> inputs``, ``kit.split("test")``, ``kit.evaluate``."""

    recipe: KitRecipe
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def metric(self) -> str:
        """The headline metric's name (a key of :meth:`evaluate`'s result)."""
        return self.recipe.metric

    @property
    def objective_p99_ms(self) -> float:
        return self.recipe.objective_p99_ms

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def models(self) -> dict[str, Path]:
        """Artifact folders of the kit's float models, by name; the first is the main one."""
        return {name: self.path / rel for name, rel in self.meta["models"].items()}

    @property
    def model_path(self) -> Path:
        return next(iter(self.models.values()))

    def original_model(self) -> Any:
        """The main float model (an :class:`~rtinfer.ImportedModel`, with its PyTorch form
        when the kit saved one)."""
        from rtinfer.deploy.artifact import load_artifact

        return load_artifact(self.model_path).model

    @property
    def quality(self) -> dict[str, Any]:
        """Measured quality of each float model on the test split, from the build."""
        return dict(self.meta["quality"])

    @property
    def split_names(self) -> list[str]:
        return list(self.meta["splits"])

    @cached_property
    def _data(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "data.npz", allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def split(self, name: str) -> Split:
        if name not in self.meta["splits"]:
            raise ValueError(f"kit '{self.name}' has no split '{name}'; it has "
                             f"{self.split_names}")
        prefix = f"{name}/"
        inputs = {k.split("/", 2)[2]: v for k, v in self._data.items()
                  if k.startswith(prefix + "inputs/")}
        raw = {k.split("/", 2)[2]: v for k, v in self._data.items()
               if k.startswith(prefix + "raw/")}
        return Split(inputs=inputs, targets=self._data[prefix + "targets"], raw=raw)

    def beyond_split(self) -> tuple[str, Split] | None:
        """A small evaluation set from outside the kit's split rule (the intent kit's
        hand-written requests, the perception kit's shifted scans, the fraud kit's drifted
        traffic) with what it is; None when the kit has none."""
        found = self.recipe.beyond(self) if self.recipe.beyond is not None else None
        if found is None:
            return None
        what, inputs, targets = found
        return what, Split(inputs=inputs, targets=np.asarray(targets), raw={})

    def preprocess(self, raw_items: Sequence[Any]) -> dict[str, np.ndarray]:
        """Model inputs for a list of raw items (records, sentences or images)."""
        return self.recipe.preprocess(self.meta, raw_items)

    def evaluate(self, outputs: Mapping[str, np.ndarray], split: str = "test") -> dict[str, float]:
        """The kit's metrics for model ``outputs`` computed on ``split``'s inputs."""
        return self.recipe.evaluate(self.meta, self.split(split).targets, outputs)

    def evaluate_session(self, session: Any, split: str = "test",
                         batch: int = 256) -> dict[str, float]:
        """Run ``session`` over a split in batches and compute the kit's metrics."""
        from rtinfer.engines.base import run_in_batches

        data = self.split(split)
        return self.recipe.evaluate(self.meta, data.targets,
                                    run_in_batches(session, data.inputs, batch))


def kit_folder(recipe: KitRecipe, size: str) -> Path:
    return cache_dir() / "kits" / f"{recipe.name}-{size}-{recipe.key(size)}"


def build_kit(recipe: KitRecipe, size: str = "full", *, force: bool = False,
              progress: Progress | None = None) -> Kit:
    """Build ``recipe`` (or reuse the cached build) and load it."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    say = progress or (lambda _msg: None)
    folder = kit_folder(recipe, size)
    if force and folder.exists():
        shutil.rmtree(folder)
    if not (folder / "kit.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            start = time.perf_counter()
            meta = recipe.build(staging, size, say)
            meta.update(kit=recipe.name, size=size, key=recipe.key(size),
                        build_seconds=round(time.perf_counter() - start, 1))
            (staging / "kit.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False),
                                               encoding="utf-8")
            try:
                staging.rename(folder)
            except OSError:  # built concurrently by another process: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    meta = json.loads((folder / "kit.json").read_text(encoding="utf-8"))
    return Kit(recipe=recipe, path=folder, meta=meta)


def record_models(meta: dict[str, Any], folder: Path, artifacts: Mapping[str, Any]) -> None:
    """Note each float model's artifact folder (relative to the kit) and source hash in
    ``meta``; the first is the kit's main model."""
    meta["models"] = {name: str(a.path.relative_to(folder)) for name, a in artifacts.items()}
    meta["model_sha256"] = {name: a.model.source.sha256 for name, a in artifacts.items()}


def save_splits(folder: Path, splits: Mapping[str, Split]) -> None:
    """Write every split into ``data.npz`` as ``<split>/inputs/<name>`` etc."""
    arrays: dict[str, np.ndarray] = {}
    for name, split in splits.items():
        arrays[f"{name}/targets"] = split.targets
        arrays.update({f"{name}/inputs/{k}": v for k, v in split.inputs.items()})
        arrays.update({f"{name}/raw/{k}": v for k, v in split.raw.items()})
    for key, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"{key} has dtype object, which would need pickle; use str arrays")
    np.savez_compressed(folder / "data.npz", **arrays)  # type: ignore[arg-type]


def stratified_split(targets: np.ndarray, fractions: Mapping[str, float],
                     seed: int) -> dict[str, np.ndarray]:
    """Row indices per split, class proportions kept, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    names = list(fractions)
    cuts = np.cumsum([fractions[n] for n in names])
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for c in np.unique(targets):
        idx = rng.permutation(np.nonzero(targets == c)[0])
        bounds = np.round(cuts / cuts[-1] * len(idx)).astype(int)
        for name, lo, hi in zip(names, np.r_[0, bounds[:-1]], bounds, strict=True):
            out[name].append(idx[lo:hi])
    return {n: np.sort(np.concatenate(v)) for n, v in out.items()}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Train with a fixed thread count (results then repeat exactly), restoring it after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"
