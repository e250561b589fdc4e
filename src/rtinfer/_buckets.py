"""Length buckets: a text batch's sequence axis zero-padded up to one of a few lengths, so an
engine sees a handful of shapes instead of one per sentence length. Zeros are what a tokenizer
pads with: masked out by the ``attention_mask``, ``[PAD]`` in the ids. Used by the server's
batcher (requests of one bucket share a batch) and by the OpenVINO engine (whose bf16 kernels
pay for each change of shape)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

__all__ = ["MASK", "bucket_for", "pad_sequence"]

MASK = "attention_mask"  # the input whose width is a text batch's real length


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest of ``buckets`` (ascending) >= ``length``; ``length`` itself past the
    largest."""
    return next((b for b in buckets if b >= length), length)


def pad_sequence(feeds: Mapping[str, np.ndarray], width: int,
                 names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """``feeds`` with axis 1 of the 2-D inputs (those in ``names``, or all) zero-padded to
    ``width``; the caller's arrays are not changed."""
    return {k: np.pad(v, ((0, 0), (0, width - v.shape[1])))
            if v.ndim == 2 and (names is None or k in names) and v.shape[1] < width else v
            for k, v in feeds.items()}
