"""Fixtures of the kit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtinfer import kits
from rtinfer.kits import Kit


@pytest.fixture
def perception_as_full(perception_kit: Kit, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Kit:
    """``--kit perception`` resolves the full-size build: in a private cache, the small build
    stands in for it."""
    monkeypatch.setenv("RTINFER_CACHE", str(tmp_path / "cache"))
    full = kits.kit_folder(kits.recipe("perception"), "full")
    full.parent.mkdir(parents=True)
    full.symlink_to(perception_kit.path)
    return perception_kit
