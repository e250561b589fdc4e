"""Importing ONNX files: valid ones load with their spec, broken ones fail clearly."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rtinfer
from rtinfer import ModelLoadError, UnsupportedModelError


def _matmul_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.arange(8, dtype=np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                              [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_valid_file_gives_spec_opset_and_hash(tmp_path: Path) -> None:
    model = rtinfer.import_model(_matmul_model(tmp_path / "m.onnx"))
    assert model.spec.describe() == (
        "inputs:\n  x float32 (batch, 4)\noutputs:\n  y float32 (batch, 2)")
    assert model.opset == {"ai.onnx": 17}
    assert model.source.kind == "onnx" and len(model.source.sha256) == 64


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model at .*nope.onnx"):
        rtinfer.import_model(tmp_path / "nope.onnx")


def test_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = _matmul_model(tmp_path / "m.onnx")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a readable ONNX model|fails the ONNX checker"):
        rtinfer.import_model(path)


def test_random_bytes_are_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        rtinfer.import_model(path)


def test_graph_failing_the_checker(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    # 'ghost' is consumed but produced by nothing: the checker rejects the graph.
    graph = helper.make_graph([helper.make_node("Add", ["x", "ghost"], ["y"])], "g", [x], [y])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelLoadError, match="fails the ONNX checker: .*ghost"):
        rtinfer.import_model(path)


def test_pickle_files_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnsupportedModelError, match="never unpickles"):
        rtinfer.import_model(path)


def test_unsupported_object() -> None:
    with pytest.raises(UnsupportedModelError, match="cannot import a builtins.dict"):
        rtinfer.import_model({"not": "a model"})
