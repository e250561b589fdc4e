"""inspect's numbers: parameters and FLOPs worked out by hand for small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.models.summary import count_flops, summarize


def test_flops_of_a_conv_and_linear_by_hand(tmp_path: Path) -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),   # (B, 8, 16, 16)
        torch.nn.Flatten(),                    # (B, 2048)
        torch.nn.Linear(8 * 16 * 16, 5),       # (B, 5)
    ).eval()
    model = rtinfer.import_model(net, (torch.randn(2, 3, 16, 16),), out_dir=tmp_path)
    conv = 2 * (8 * 16 * 16) * (3 * 3 * 3)   # each output element: C_in*kH*kW MACs
    linear = 2 * 2048 * 5
    flops = count_flops(model, batch=4)
    assert flops["total"] == 4 * (conv + linear)
    assert flops["per_sample"] == conv + linear
    assert flops["unresolved_nodes"] == 0


def test_summary_of_the_cnn(cnn: ImportedModel, cnn_module) -> None:  # type: ignore[no-untyped-def]
    info = summarize(cnn)
    # Batch norm folds into the convolutions on export, so count what torch has minus BN.
    bn = sum(p.numel() for m in cnn_module.modules() if isinstance(m, torch.nn.BatchNorm2d)
             for p in m.parameters())
    conv_linear = sum(p.numel() for p in cnn_module.parameters()) - bn
    assert info["parameters"] >= conv_linear
    assert info["op_histogram"]["Conv"] == 2
    assert info["size_bytes"] == cnn.path.stat().st_size
    assert info["flops"]["per_sample"] > 0


def test_summary_of_a_tree_model_counts_attribute_parameters(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    x_train, _, y_train, _ = breast_cancer
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    model = rtinfer.import_model(forest.fit(x_train, y_train), example_inputs=x_train[:16])
    info = summarize(model)
    assert info["parameters"] > 0
    assert "ai.onnx.ml" in info["opset"]
    assert info["flops"]["per_sample"] == 0  # trees do comparisons, not multiply-adds


@pytest.mark.slow
def test_minilm_flops_match_the_closed_form(minilm: ImportedModel) -> None:
    layers, d, ffn, seq = 6, 384, 1536, 128
    projections = layers * seq * (4 * d * d + 2 * d * ffn)
    attention = layers * 2 * seq * seq * d
    pooler = d * d
    expected = 2 * (projections + attention + pooler)
    got = count_flops(minilm, {"sequence": seq})["per_sample"]
    assert got == pytest.approx(expected, rel=0.01)
    assert 2.8e9 < got < 3.0e9  # REFERENCE.md: about 2.9 GFLOP


@pytest.mark.parametrize(("batch_dim", "per_sample", "total_at_4"), [
    ("N", 24, 96),    # a batch axis: one sample's work, scaled by the batch asked for
    (1, 24, 24),      # a fixed leading axis: the model as it is, one inference
])
def test_flops_per_sample_with_and_without_a_batch_axis(
        tmp_path: Path, batch_dim: object, per_sample: int, total_at_4: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 3])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = rtinfer.import_model(path)
    assert count_flops(model)["per_sample"] == per_sample  # 2 x 4 x 3 multiply-adds
    assert count_flops(model, batch=4)["total"] == total_at_4
