"""Query samples for load tests: real rows from a kit or an ``.npz`` file, else synthetic.

    samples = load_samples(kit="intent")           # the kit's test split, one row per sample
    samples = load_samples(data="inputs.npz")      # arrays named as the model's inputs
    samples.items[0]                               # {"input_ids": (1, 14) int64, ...}

Text keeps its real length: when the inputs carry an ``attention_mask``, each row is cut to its
own number of tokens, so the lengths the load test sends follow the data's distribution rather
than the longest sentence of the split (padding would inflate every latency; see REFERENCE.md
§1, a 6x effect on MiniLM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._buckets import MASK
from rtinfer._resample import resize
from rtinfer.spec import ModelSpec

__all__ = ["Samples", "at_shapes", "load_samples", "real_batches", "samples_from_arrays"]



@dataclass
class Samples:
    """One feed dict per sample, each with a leading batch axis of 1."""

    items: list[dict[str, np.ndarray]]
    source: str
    details: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "count": len(self.items), **self.details}


def real_batches(arrays: Mapping[str, np.ndarray], batch: int,
                 count: int = 64) -> list[dict[str, np.ndarray]]:
    """Up to ``count`` batches of ``batch`` consecutive real rows (cycling when the data is
    short), text cut to each batch's longest sentence: latency at the data's own shapes, not
    at the padded width of the split. Without an ``attention_mask``: one batch."""
    n = len(next(iter(arrays.values())))
    mask = arrays.get(MASK)
    groups = [np.arange(i * batch, (i + 1) * batch) % n
              for i in range(count if mask is not None and mask.ndim == 2 else 1)]
    out = []
    for rows in groups:
        feeds = {k: np.take(v, rows, axis=0) for k, v in arrays.items()}
        if mask is not None and mask.ndim == 2:
            used = max(int(feeds[MASK].sum(axis=1).max()), 1)
            feeds = {k: v[:, :used] if v.ndim == 2 and v.shape[1] == mask.shape[1] else v
                     for k, v in feeds.items()}
        out.append({k: np.ascontiguousarray(v) for k, v in feeds.items()})
    return out


_MODES = {3: "linear", 4: "bilinear", 5: "trilinear"}


def at_shapes(feeds: list[dict[str, np.ndarray]],
              shapes: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
    """``feeds`` with the named inputs resized to whole shapes, e.g. ``{"image": (1, 3, 224,
    224)}``: the deployment's input size measured on real content. A float input of rank 3 to
    5 (signal, NCHW image, volume) is interpolated over the axes after the channels (linear,
    bilinear, trilinear); its batch and channel axes must already be the given ones. Anything
    else is a ValueError that says why."""
    if not feeds or not shapes:
        return feeds
    names = list(feeds[0])
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise ValueError(f"--shape names {unknown}, which the model does not take; its inputs "
                         f"are {names}")
    for name, dims in shapes.items():
        have = feeds[0][name]
        want = tuple(int(d) for d in dims)
        if want == have.shape:
            continue
        if have.dtype.kind != "f" or have.ndim not in _MODES:
            raise ValueError(f"--shape {name}: only a float input of rank 3 to 5 (signal, "
                             f"image, volume) can be resized; {name} is {have.dtype} of shape "
                             f"{list(have.shape)}")
        if len(want) != have.ndim or want[:2] != have.shape[:2] or min(want) < 1:
            raise ValueError(f"--shape {name}={','.join(map(str, want))}: give {have.ndim} "
                             f"positive sizes that keep the batch and channel axes "
                             f"{list(have.shape[:2])} and change only the rest (the data is "
                             f"{list(have.shape)})")
    sizes = {name: {axis: int(d) for axis, d in enumerate(dims) if axis >= 2}
             for name, dims in shapes.items()}
    return [{k: np.ascontiguousarray(resize(v, sizes[k])) if k in sizes else v
             for k, v in feed.items()} for feed in feeds]


def samples_from_arrays(arrays: Mapping[str, np.ndarray], source: str,
                        limit: int = 1024) -> Samples:
    """Rows of ``arrays`` (all of one length) as samples; text rows cut to their mask."""
    if not arrays:
        raise ValueError(f"{source} holds no arrays; expected one array per model input")
    rows = {len(v) for v in arrays.values()}
    if len(rows) != 1:
        raise ValueError(f"{source}: arrays have different numbers of rows {sorted(rows)}; "
                         "every input needs one row per sample")
    n = min(rows.pop(), limit)
    mask = arrays.get(MASK)
    lengths, padded = None, 0
    if mask is not None and mask.ndim == 2:
        lengths = np.maximum(mask[:n].sum(axis=1).astype(int), 1)
        padded = int(mask.shape[1])
    items = []
    for i in range(n):
        item = {}
        for name, value in arrays.items():
            row = value[i:i + 1]
            if lengths is not None and row.ndim == 2 and row.shape[1] == padded:
                row = row[:, :lengths[i]]  # (1, L_i): this sentence's own tokens
            item[name] = np.ascontiguousarray(row)
        items.append(item)
    details: dict[str, Any] = {}
    if lengths is not None:
        details["sequence_length"] = {
            "min": int(lengths.min()), "p50": float(np.median(lengths)),
            "max": int(lengths.max()), "padded_to": padded,
            "note": "each sample cut to its attention mask: real lengths, no padding"}
    return Samples(items, source, details)


def load_samples(*, kit: str | None = None, data: str | Path | None = None,
                 spec: ModelSpec | None = None, dims: Mapping[str, int] | None = None,
                 limit: int = 1024, kit_size: str = "full") -> Samples:
    """Samples from a kit's test split, an ``.npz`` file, or synthetic from ``spec``."""
    if kit is not None and data is not None:
        raise ValueError("give either a kit or a data file, not both")
    if kit is not None:
        from rtinfer import kits

        split = kits.load(kit, size=kit_size, build=False).split("test")
        return samples_from_arrays(split.inputs, f"kit {kit} ({kit_size}), test split", limit)
    if data is not None:
        path = Path(data)
        if path.suffix != ".npz" or not path.is_file():
            raise ValueError(f"--data must be an existing .npz file of input arrays, got "
                             f"'{path}'")
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        return samples_from_arrays(arrays, f"file {path.name}", limit)
    if spec is None:
        raise ValueError("this target does not describe its inputs; give --kit or --data")
    feeds = spec.example_inputs(batch=1, dims=dims)
    return Samples([feeds], "synthetic (zeros/ones from the model's spec)",
                   {"shapes": {k: list(v.shape) for k, v in feeds.items()}})
