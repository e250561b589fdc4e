"""ModelSpec: the one gate every engine's inputs pass through."""

from __future__ import annotations

import numpy as np
import pytest

from rtinfer import InvalidInputError, ModelSpec, TensorSpec

SPEC = ModelSpec(
    inputs=(
        TensorSpec("input_ids", "int64", ("batch", "sequence")),
        TensorSpec("attention_mask", "int64", ("batch", "sequence")),
        TensorSpec("image", "float32", ("batch", 3, 8, 8)),
    ),
    outputs=(TensorSpec("logits", "float32", ("batch", 2)),),
)


def feeds(batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.zeros((batch, seq), np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
        "image": np.zeros((batch, 3, 8, 8), np.float32),
    }


def test_valid_inputs_come_back_in_model_order() -> None:
    given = dict(reversed(list(feeds().items())))
    assert list(SPEC.validate(given)) == ["input_ids", "attention_mask", "image"]


def test_unknown_name_lists_the_real_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown input name\(s\) \['pixels'\]; "
                       r"this model's inputs are \['input_ids', 'attention_mask', 'image'\]"):
        SPEC.validate({**feeds(), "pixels": np.zeros(1)})


def test_missing_input_says_what_is_needed() -> None:
    f = feeds()
    del f["attention_mask"]
    with pytest.raises(InvalidInputError, match=r"missing input\(s\) \['attention_mask'\]; "
                       r"this model needs .*attention_mask int64 \(batch, sequence\)"):
        SPEC.validate(f)


def test_wrong_dtype_names_input_received_and_expected() -> None:
    f = feeds()
    f["input_ids"] = f["input_ids"].astype(np.int32)
    with pytest.raises(InvalidInputError, match=r"input 'input_ids' has dtype int32, expected "
                       r"int64; cast it with x.astype\(np.int64\)"):
        SPEC.validate(f)


def test_wrong_rank() -> None:
    f = feeds()
    f["image"] = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(InvalidInputError, match=r"input 'image' has shape \(3, 8, 8\) \(rank 3\), "
                       r"expected rank 4: \(batch, 3, 8, 8\)"):
        SPEC.validate(f)


def test_wrong_fixed_size() -> None:
    f = feeds()
    f["image"] = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(InvalidInputError, match=r"input 'image' has size 1 on axis 1, "
                       r"expected 3"):
        SPEC.validate(f)


def test_symbolic_dimension_must_agree_across_inputs() -> None:
    f = feeds()
    f["attention_mask"] = np.ones((2, 7), np.int64)
    with pytest.raises(InvalidInputError, match=r"input 'attention_mask' has sequence=7 on axis "
                       r"1, but input 'input_ids' has sequence=5"):
        SPEC.validate(f)


def test_non_array_is_a_type_error_with_the_fix() -> None:
    f: dict[str, object] = dict(feeds())
    f["input_ids"] = [[1, 2, 3]]
    with pytest.raises(TypeError, match=r"np.asarray\(value, dtype=np.int64\)"):
        SPEC.validate(f)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a dict"):
        SPEC.validate([1, 2])  # type: ignore[arg-type]


def test_round_trip_through_dict() -> None:
    assert ModelSpec.from_dict(SPEC.to_dict()) == SPEC


def test_example_inputs_follow_the_spec() -> None:
    ex = SPEC.example_inputs(batch=3, dims={"sequence": 11})
    SPEC.validate(ex)
    assert ex["input_ids"].shape == (3, 11)
    assert (ex["attention_mask"] == 1).all()
    assert ex["image"].dtype == np.float32


def test_kserve_datatypes() -> None:
    assert [t.kserve_datatype for t in SPEC.inputs] == ["INT64", "INT64", "FP32"]
    assert TensorSpec("s", "object", ("batch",)).kserve_datatype == "BYTES"


def test_bad_dimension_is_rejected() -> None:
    with pytest.raises(TypeError, match="dimension -1 of 'x'"):
        TensorSpec("x", "float32", (-1, 3))


def test_from_onnx_reads_names_types_and_symbols() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    init = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.0] * 8)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x, w], [y],
                              [init])
    spec = ModelSpec.from_onnx(helper.make_model(graph))
    # 'w' is an initializer listed as an input (old exporters do this): not a real input.
    assert spec.input_names == ["x"]
    assert spec.inputs[0] == TensorSpec("x", "float32", ("N", 4))
    assert spec.outputs[0].shape == ("N", 2)


def test_given_shapes_size_every_input_that_shares_their_dimensions() -> None:
    """`--shape input_ids=1,128` sizes attention_mask too; two sizes for one symbol, or a
    fixed dimension given otherwise, are refused by name."""
    from rtinfer.errors import InvalidInputError
    from rtinfer.spec import ModelSpec, TensorSpec

    spec = ModelSpec(inputs=(TensorSpec("input_ids", "int64", ("batch", "sequence")),
                             TensorSpec("attention_mask", "int64", ("batch", "sequence")),
                             TensorSpec("image", "float32", ("batch", 3, None))),
                     outputs=(TensorSpec("y", "float32", ("batch", 2)),))
    feeds = spec.example_inputs(batch=4, shapes={"input_ids": (1, 128), "image": (1, 3, 48)})
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape == (4, 128)
    assert feeds["image"].shape == (4, 3, 48)
    import pytest

    with pytest.raises(InvalidInputError, match="dimension 'sequence' is 64 here but 128"):
        spec.example_inputs(shapes={"input_ids": (1, 128), "attention_mask": (1, 64)})
    with pytest.raises(InvalidInputError, match="axis 1 is fixed at 3 in the model, got 4"):
        spec.check_shapes({"image": (1, 4, 48)})


def test_the_leading_axis_takes_the_batch_whatever_its_name() -> None:
    """A third-party model's batch axis is often ``N`` or unnamed: it still takes ``batch``,
    unless a size was given for it; a model with a fixed leading axis keeps it."""
    spec = ModelSpec((TensorSpec("x", "float32", ("N", 3, None, "w")),),
                     (TensorSpec("y", "float32", ("N", 10)),))
    assert spec.example_inputs(batch=4)["x"].shape == (4, 3, 1, 1)
    assert spec.example_inputs(batch=4, dims={"w": 320})["x"].shape == (4, 3, 1, 320)
    assert spec.example_inputs(batch=4, dims={"N": 2})["x"].shape == (2, 3, 1, 1)
    unnamed = ModelSpec((TensorSpec("x", "float32", (None, 8)),),
                        (TensorSpec("y", "float32", (None, 2)),))
    assert unnamed.example_inputs(batch=3)["x"].shape == (3, 8)
    mixed = ModelSpec((TensorSpec("a", "float32", ("N", 8)), TensorSpec("b", "float32", (1, 8))),
                      (TensorSpec("y", "float32", ("N", 2)),))
    assert mixed.example_inputs(batch=3)["a"].shape == (1, 8)  # no batch axis on every input
    # A leading symbol that also sizes another axis is not a batch axis.
    seq_first = ModelSpec((TensorSpec("x", "float32", ("seq", "batch", 16)),),
                          (TensorSpec("y", "float32", ("seq", "batch", 16)),))
    assert seq_first.batch_axis() == (False, None)
    assert seq_first.example_inputs(batch=8)["x"].shape == (1, 8, 16)
    square = ModelSpec((TensorSpec("x", "float32", ("N", "N")),),
                       (TensorSpec("y", "float32", ("N",)),))
    assert square.batch_axis() == (False, None)
    assert square.example_inputs(batch=4)["x"].shape == (1, 1)
