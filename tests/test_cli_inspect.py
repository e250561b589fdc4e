"""`rtinfer inspect` counts FLOPs at real shapes: --shape as benchmark tools take it, or the
shape of a task's own test rows; the table says which."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rtinfer.cli import app
from rtinfer.errors import InvalidInputError

runner = CliRunner()


def _conv_model(path: Path) -> Path:
    """One 3x3 convolution, 3 -> 4 channels, on an input (N, 3, h, w): as a third-party
    recognition model declares its dynamic height and width."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "h", "w"])],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _inspect(tmp_path: Path, *args: str) -> dict[str, Any]:
    """inspect's JSON; the table says the shapes the FLOPs were counted at, and where from."""
    out = tmp_path / "inspect.json"
    res = runner.invoke(app, ["inspect", *args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    info: dict[str, Any] = json.loads(out.read_text())
    flops = info["flops"]
    at = ", ".join(f"{k}{tuple(v)}" for k, v in flops["input_shapes"].items())
    assert f"at {at}, from {flops['counted_at']}" in " ".join(res.output.split())
    return info


def test_flops_at_a_given_shape_scale_with_height_times_width(tmp_path: Path) -> None:
    model = str(_conv_model(tmp_path / "conv.onnx"))
    wide = _inspect(tmp_path, model, "--shape", "x=1,3,48,320")["flops"]
    small = _inspect(tmp_path, model, "--shape", "x=1,3,24,160")["flops"]
    # Each output element: 3 channels x 3 x 3 multiply-adds, 2 FLOP each.
    assert wide["per_sample"] == 2 * (4 * 48 * 320) * (3 * 3 * 3)
    assert wide["per_sample"] == 4 * small["per_sample"]
    assert wide["input_shapes"] == {"x": [1, 3, 48, 320]} and wide["counted_at"] == "--shape"
    free = _inspect(tmp_path, model)["flops"]  # no shape given: free dims take 1, and it says so
    assert free["input_shapes"] == {"x": [1, 3, 1, 1]} and "free dims = 1" in free["counted_at"]
    res = runner.invoke(app, ["inspect", model, "--shape", "x=1,4,48,320"])
    assert isinstance(res.exception, InvalidInputError)
    assert "axis 1 is fixed at 3 in the model, got 4" in str(res.exception)


TOKENS_NET = '''
import torch


class TokenNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.mix = torch.nn.Linear(16, 16)  # applied per token: its work grows with the length
        self.head = torch.nn.Linear(16, 3)

    def forward(self, ids):
        x = torch.relu(self.mix(self.embed(ids)))  # (B, T, 16)
        return self.head(x.mean(dim=1))            # (B, 3)


def build() -> TokenNet:
    torch.manual_seed(0)
    return TokenNet()
'''


@pytest.fixture(scope="module")
def token_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A task whose .npz stores its splits (token ids of 12 positions, labels 0-2) and whose
    torch entry point takes a dynamic sequence axis."""
    folder = tmp_path_factory.mktemp("token-task")
    (folder / "token_net.py").write_text(TOKENS_NET)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("validation", 30), ("test", 30)):
        arrays[f"{split}/ids"] = rng.integers(0, 50, size=(n, 12))           # (N, 12) int64
        arrays[f"{split}/label"] = np.arange(n) % 3
    np.savez(folder / "data.npz", **arrays)  # type: ignore[arg-type]
    (folder / "task.toml").write_text(textwrap.dedent('''
        metric = "accuracy"

        [model]
        torch = "token_net:build"
        dynamic_axes = { ids = { 1 = "sequence" } }

        [data]
        path = "data.npz"
        split = "stored"
    '''))
    return folder / "task.toml"


def test_a_task_counts_flops_at_its_rows_sequence_length(token_task: Path,
                                                         tmp_path: Path) -> None:
    info = _inspect(tmp_path, str(token_task))
    # The exported entry point: token ids stay integers, the sequence axis is dynamic.
    assert info["inputs"] == [{"name": "ids", "dtype": "int64", "shape": ["batch", "sequence"]}]
    flops = info["flops"]
    assert flops["input_shapes"] == {"ids": [1, 12]}  # the data's length, not 1
    assert "task's test rows" in flops["counted_at"]
    assert flops["per_sample"] == 2 * 12 * 16 * 16 + 2 * 16 * 3  # per-token mix + head
