"""OpenVINO's length buckets: token inputs padded up to a bucket before the call (masked out),
outputs along the sequence axis cut back, and a model whose padding could not be undone refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rtinfer
from rtinfer.engines.openvino_engine import (
    LENGTH_BUCKETS_KEY,
    PRECISION_KEY,
    TEXT_LENGTH_BUCKETS,
    length_plan,
)
from rtinfer.errors import EngineError
from rtinfer.optimize import Quantize, quantize
from rtinfer.spec import ModelSpec, TensorSpec

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def token_model(tmp_path_factory: pytest.TempPathFactory) -> rtinfer.ImportedModel:
    """Projected embeddings per token (batch, sequence, 4), their masked mean (batch, 4), and
    the width the engine really ran at (Shape(input_ids)[1], as float)."""
    seq = ["batch", "sequence"]
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 4)).astype(np.float32)
    weight = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["looked_up"]),
        helper.make_node("MatMul", ["looked_up", "weight"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["tokens"]),
        helper.make_node("ReduceSum", ["tokens", "seq_axis"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["pooled"]),
        helper.make_node("Shape", ["input_ids"], ["shape"], start=1, end=2),
        helper.make_node("Cast", ["shape"], ["width"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, seq),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, seq)],
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [*seq, 4]),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("width", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "weight"),
         numpy_helper.from_array(np.array([-1], np.int64), "last"),
         numpy_helper.from_array(np.array([1], np.int64), "seq_axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("tokens") / "model.onnx"
    onnx.save(model, str(path))
    return rtinfer.import_model(path)


def _feeds(length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(length)
    mask = np.ones((2, length), np.int64)
    mask[1, length // 2:] = 0  # the second row is shorter: the batch is padded already
    return {"input_ids": rng.integers(1, 50, (2, length)).astype(np.int64),
            "attention_mask": mask}


def test_inputs_are_padded_to_the_bucket_and_outputs_cut_back(token_model: rtinfer.ImportedModel
                                                              ) -> None:
    with rtinfer.load(token_model, "openvino", threads=1) as plain, \
            rtinfer.load(token_model, "openvino", threads=1, length_buckets=(8, 16)) as padded:
        assert padded.describe()["length_buckets"] == [8, 16]
        assert plain.describe()["length_buckets"] == []
        for length, ran_at in ((5, 8), (8, 8), (9, 16), (20, 20)):  # past the largest: as is
            feeds = _feeds(length)
            want, got = plain.run(feeds), padded.run(feeds)
            assert got["width"][0] == ran_at and want["width"][0] == length
            assert got["tokens"].shape == want["tokens"].shape == (2, length, 4)
            np.testing.assert_allclose(got["tokens"], want["tokens"], rtol=1e-6)
            np.testing.assert_allclose(got["pooled"], want["pooled"], rtol=1e-5)
            assert feeds["input_ids"].shape == (2, length)  # the caller's arrays are untouched


def test_quantizing_for_openvino_marks_text_models_for_buckets(
        token_model: rtinfer.ImportedModel, cnn: rtinfer.ImportedModel) -> None:
    text = quantize(token_model, Quantize(method="bf16", engine="openvino"))
    marks = {p.key: p.value for p in onnx.load(str(text.path)).metadata_props}
    assert marks[PRECISION_KEY] == "bf16"
    assert marks[LENGTH_BUCKETS_KEY].split(",")[:3] == ["16", "32", "64"]
    with rtinfer.load(text, "openvino", threads=1, precision="f32") as s:
        assert s.describe()["length_buckets"][0] == 16
        assert s.run(_feeds(5))["width"][0] == 16
    with rtinfer.load(text, "openvino", threads=1, precision="f32", length_buckets=()) as s:
        assert s.run(_feeds(5))["width"][0] == 5  # an option overrides the file
    int8 = quantize(token_model, Quantize(method="dynamic", engine="openvino"))
    marks = {p.key: p.value for p in onnx.load(str(int8.path)).metadata_props}
    assert marks[LENGTH_BUCKETS_KEY] == ",".join(map(str, TEXT_LENGTH_BUCKETS))
    with rtinfer.load(int8, "openvino", threads=1) as s, \
            rtinfer.load(token_model, "openvino", threads=1) as f:
        feeds = _feeds(5)
        got, want = s.run(feeds), f.run(feeds)
        assert got["width"][0] == 16 and got["tokens"].shape == (2, 5, 4)
        np.testing.assert_allclose(got["pooled"], want["pooled"], atol=0.1)  # int8 weights
    image = quantize(cnn, Quantize(method="bf16", engine="openvino"))
    assert LENGTH_BUCKETS_KEY not in {p.key for p in onnx.load(str(image.path)).metadata_props}


def test_padding_that_could_not_be_undone_is_refused(cnn: rtinfer.ImportedModel) -> None:
    with pytest.raises(EngineError, match="length_buckets needs an 'attention_mask' input"):
        rtinfer.load(cnn, "openvino", threads=1, length_buckets=(16,))
    seq = ("batch", "sequence")
    ins = (TensorSpec("input_ids", "int64", seq), TensorSpec("attention_mask", "int64", seq))
    unnamed = ModelSpec(ins, (TensorSpec("tokens", "float32", ("batch", None, 4)),))
    assert length_plan(unnamed, (16,)) is None  # the unnamed axis might be the sequence
    no_name = ModelSpec((TensorSpec("attention_mask", "int64", ("batch", None)),),
                        (TensorSpec("y", "float32", ("batch", 2)),))
    assert length_plan(no_name, (16,)) is None
    plan = length_plan(ModelSpec(ins, (TensorSpec("tokens", "float32", (*seq, 4)),)), (32, 16))
    assert plan is not None and plan.buckets == (16, 32)
    assert plan.inputs == ("input_ids", "attention_mask") and plan.output_axes == {"tokens": (1,)}


def test_bucket_lengths_must_be_positive(token_model: rtinfer.ImportedModel) -> None:
    with pytest.raises(EngineError, match="positive lengths"):
        rtinfer.load(token_model, "openvino", threads=1, length_buckets=(0, 16))
