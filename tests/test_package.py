"""The public surface: lean import, complete sorted __all__, clear missing-extra errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rtinfer
from rtinfer._deps import require
from rtinfer.errors import MissingExtraError


def test_import_loads_no_framework_or_engine() -> None:
    code = (
        "import sys, rtinfer; "
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'transformers', "
        "'sklearn', 'xgboost') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"import rtinfer pulled in: {out}"


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert list(rtinfer.__all__) == sorted(rtinfer.__all__)
    for name in rtinfer.__all__:
        assert getattr(rtinfer, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rtinfer.nope  # noqa: B018


def test_missing_extra_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name == "openvino":
            raise ModuleNotFoundError("No module named 'openvino'", name="openvino")
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingExtraError, match=r"pip install 'rtinfer\[openvino\]'") as info:
        require("openvino", "The openvino engine")
    assert isinstance(info.value, ImportError)
    assert "The openvino engine needs the Python package 'openvino'" in str(info.value)


def test_broken_dependency_shows_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    def fake(name: str, *args: object) -> object:
        raise ModuleNotFoundError("No module named 'libfoo'", name="libfoo")

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ModuleNotFoundError, match="libfoo"):
        require("openvino", "The openvino engine")
