"""Warm-up: a model whose free dimensions cannot be 1 still loads, and real inputs warm it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import rtinfer


def _pooled_model(folder: Path) -> rtinfer.ImportedModel:
    """Input (N, 3, ?, 32): an unpadded 5x5 convolution needs at least 5 rows, so a synthetic
    warm-up batch of height 1 cannot run (a text-recognition model's shape)."""
    import torch

    class Recognizer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 5)
            self.head = torch.nn.Linear(4, 5)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(image).mean(dim=(2, 3)))  # any height >= 5

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 32)
    return rtinfer.import_model(Recognizer().eval(), {"image": x},
                                dynamic_axes={"image": {2: "height"}}, out_dir=folder)


# ONNX Runtime refuses the 1-row batch; OpenVINO runs it (an empty output), so only the
# first warns — neither may fail to load.
@pytest.mark.parametrize(("engine", "warns"), [("onnxruntime", True), ("openvino", False)])
def test_a_failing_synthetic_warmup_is_not_a_load_failure(
        engine: str, warns: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if engine not in rtinfer.available_engines():
        pytest.skip(f"{engine} is not installed")
    model = _pooled_model(tmp_path)
    real = {"image": np.random.default_rng(0).standard_normal((1, 3, 48, 32),
                                                              dtype=np.float32)}
    with caplog.at_level(logging.WARNING, logger="rtinfer"), \
            rtinfer.load(model, engine, threads=1) as s:
        assert s.run(real)["output"].shape == (1, 5)
    assert ("warm-up with a synthetic batch" in caplog.text) is warns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rtinfer"), \
            rtinfer.load(model, engine, threads=1, warmup=real) as s:
        assert s.run(real)["output"].shape == (1, 5)
    assert "warm-up" not in caplog.text
    with pytest.raises(rtinfer.InvalidInputError):  # real inputs given must run
        rtinfer.load(model, engine, threads=1, warmup={"image": real["image"][:, :1]})


def test_bench_model_times_the_shape_given(tmp_path: Path) -> None:
    """`--shape` as benchmark tools take it: the synthetic batch has the user's image size,
    the dynamic first axis follows -b, and a shape the model cannot have is refused."""
    import json

    from typer.testing import CliRunner

    from rtinfer.cli import app

    model = _pooled_model(tmp_path / "m")
    runner = CliRunner()
    res = runner.invoke(app, ["bench-model", str(model.path), "-b", "1,2", "--shape",
                              "image=1,3,48,32", "--window", "0.05", "-t", "1", "--json",
                              str(tmp_path / "b.json"), "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "b.json").read_text())
    assert [r["batch"] for r in result["results"]] == [1, 2]
    res = runner.invoke(app, ["bench-model", str(model.path), "--shape", "image=1,4,48,32"])
    assert res.exit_code != 0 and "axis 1 is fixed at 3 in the model, got 4" in str(
        res.exception)
