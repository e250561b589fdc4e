"""Where rtinfer keeps what it can rebuild: exports, kits, calibration statistics."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$RTINFER_CACHE``, else ``$XDG_CACHE_HOME/rtinfer``, else ``~/.cache/rtinfer``."""
    if os.environ.get("RTINFER_CACHE"):
        return Path(os.environ["RTINFER_CACHE"]).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "rtinfer").absolute()
