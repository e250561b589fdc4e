"""Fixtures of the load-test tests: a small ONNX model whose calls take about a millisecond,
saved as a repository model, and real servers on loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import rtinfer
from rtinfer.models import ImportedModel

# The serve tests' helper starts a real uvicorn server on a free port and polls it until ready.
sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))


def chain_onnx(path: Path, width: int = 512, depth: int = 12) -> Path:
    """``depth`` MatMuls of a (batch, width) input by one (width, width) weight: about
    ``2·width²·depth`` FLOP per row (6 MFLOP here, ~1 ms on one core), with a batch axis."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", "w"], [f"h{i}"])
             for i in range(depth)]
    nodes.append(helper.make_node("Identity", [f"h{depth - 1}"], ["y"]))
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token ids (batch, sequence) int64 -> their float sum per row (batch, 1): a stand-in for a
    text model whose requests come in many lengths."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["f", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(
        nodes, "text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("text") / "text.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> ImportedModel:
    return rtinfer.import_model(str(chain_onnx(tmp_path_factory.mktemp("chain") / "chain.onnx")))


@pytest.fixture(scope="session")
def chain_repo(chain: ImportedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    rtinfer.save_artifact(chain, repo, "chain")
    return repo


@pytest.fixture(scope="session")
def slow_chain_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Calls of a few ms (24 MatMuls of 1024x1024): loads of a few hundred QPS, where the
    Python client's own cost is small beside the model's, so a sweep repeats on a busy VM."""
    tmp = tmp_path_factory.mktemp("slow")
    repo = tmp / "repo"
    rtinfer.save_artifact(rtinfer.import_model(str(chain_onnx(tmp / "slow.onnx", width=1024,
                                                              depth=24))),
                          repo, "chain")
    return repo
