"""Linear resampling between pixel centres, the one resize rtinfer does: image kits'
pre-processing and latency measured at a deployment's input size both use it.

    resize(images, {1: 32, 2: 32})   # (N, 8, 8) -> (N, 32, 32), bilinear

Output sample ``i`` of an axis of length ``n`` resized to ``size`` sits at source position
``(i + 0.5) * n / size - 0.5`` (clamped to the edges) and mixes the two source samples around
it: torch's ``interpolate(align_corners=False)`` without anti-aliasing. Arithmetic in float64,
one cast back to the input's dtype at the end.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["resize"]


def resize(x: np.ndarray, sizes: Mapping[int, int]) -> np.ndarray:
    """``x`` with each axis in ``sizes`` resampled to its new length (linear along one axis,
    bilinear over two, trilinear over three)."""
    out = x.astype(np.float64, copy=False)
    for axis, size in sizes.items():
        if out.shape[axis] != size:
            out = np.moveaxis(np.tensordot(out, _weights(out.shape[axis], size),
                                           axes=([axis], [1])), -1, axis)
    return out.astype(x.dtype, copy=False)


def _weights(src: int, size: int) -> np.ndarray:
    """(size, src): row ``i`` holds the two weights output sample ``i`` gives its neighbours."""
    centres = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = centres - lo
    m = np.zeros((size, src))
    np.add.at(m, (np.arange(size), lo), 1 - frac)
    np.add.at(m, (np.arange(size), hi), frac)
    return m
