"""Small ONNX models for the hostile-input tests, built with onnx.helper (no torch, fast).

- ``mixed``: ``x`` FP32 [b, 4] -> ``y`` = 2x; ``ids`` INT64 [b, 3] -> ``e``, rows of a 10 x 2
  table (an id past 9 is refused by ONNX Runtime at run time); ``q`` INT8 [b, 2] and ``u``
  UINT8 [b, 2] -> ``qu`` = q + u as FP32. Batches (dynamic batching, 8 rows, 20 ms delay).
- ``strings``: ``text`` STRING [b] -> ``echo`` STRING [b] (Identity) and ``n`` INT64 [b]
  (how many elements, via Shape: checks that the request's strings arrive as strings).
- :func:`build_big_model`: a 48 MB model, for overload and memory-across-reload checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EMBEDDING = np.arange(20, dtype=np.float32).reshape(10, 2)


def _save(model: object, folder: Path, batching: bool = True) -> None:
    import onnx

    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))  # type: ignore[arg-type]
    if batching:
        (folder / "rtinfer.json").write_text(json.dumps(
            {"max_batch_size": 8, "max_queue_delay_us": 20000, "threads": 1}))


def build_repository(repo: Path) -> Path:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    nodes = [
        h.make_node("Mul", ["x", "two"], ["y"]),
        h.make_node("Gather", ["table", "ids"], ["e"]),
        h.make_node("Cast", ["q"], ["qf"], to=T.FLOAT),
        h.make_node("Cast", ["u"], ["uf"], to=T.FLOAT),
        h.make_node("Add", ["qf", "uf"], ["qu"]),
    ]
    graph = h.make_graph(
        nodes, "mixed",
        [h.make_tensor_value_info("x", T.FLOAT, ["b", 4]),
         h.make_tensor_value_info("ids", T.INT64, ["b", 3]),
         h.make_tensor_value_info("q", T.INT8, ["b", 2]),
         h.make_tensor_value_info("u", T.UINT8, ["b", 2])],
        [h.make_tensor_value_info("y", T.FLOAT, ["b", 4]),
         h.make_tensor_value_info("e", T.FLOAT, ["b", 3, 2]),
         h.make_tensor_value_info("qu", T.FLOAT, ["b", 2])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(EMBEDDING, "table")])
    _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), repo / "mixed")

    graph = h.make_graph(
        [h.make_node("Identity", ["text"], ["echo"]), h.make_node("Shape", ["text"], ["n"])],
        "strings", [h.make_tensor_value_info("text", T.STRING, ["b"])],
        [h.make_tensor_value_info("echo", T.STRING, ["b"]),
         h.make_tensor_value_info("n", T.INT64, [1])])
    _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), repo / "strings",
          batching=False)
    return repo


def build_big_model(folder: Path) -> Path:
    """``folder/1/model.onnx``: 48 MB, three 2048 x 2048 fp32 MatMuls (``x`` -> ``h2``, both
    [b, 2048]): slow enough to overload, large enough that a leak per reload shows."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.random((2048, 2048), np.float32) / 2048, f"w{i}")
             for i in range(3)]
    nodes = [h.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"])
             for i in range(3)]
    graph = h.make_graph(nodes, "big", [h.make_tensor_value_info("x", T.FLOAT, ["b", 2048])],
                         [h.make_tensor_value_info("h2", T.FLOAT, ["b", 2048])], inits)
    (folder / "1").mkdir(parents=True)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]),
              str(folder / "1" / "model.onnx"))
    return folder


def mixed_request(rows: int = 1, ids: list[int] | None = None) -> dict[str, object]:
    """A correct KServe v2 JSON request for ``mixed``."""
    return {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [1.5] * (4 * rows)},
        {"name": "ids", "datatype": "INT64", "shape": [rows, 3],
         "data": (ids or [0, 1, 9]) * rows},
        {"name": "q", "datatype": "INT8", "shape": [rows, 2], "data": [-128, 127] * rows},
        {"name": "u", "datatype": "UINT8", "shape": [rows, 2], "data": [0, 255] * rows}]}


def check_mixed_answer(answer: dict[str, object], rows: int = 1) -> None:
    """``answer`` is the right response to :func:`mixed_request`."""
    outputs = {o["name"]: o for o in answer["outputs"]}  # type: ignore[attr-defined, index]
    assert outputs["y"]["data"] == [3.0] * (4 * rows)
    assert outputs["e"]["data"] == [0.0, 1.0, 2.0, 3.0, 18.0, 19.0] * rows
    assert outputs["qu"]["data"] == [-128.0, 382.0] * rows
