"""PyTorch -> ONNX: dynamic axes, verified outputs, and a clear error when they differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import rtinfer
from rtinfer import ExportMismatchError
from rtinfer.models import ImportedModel


def test_cnn_export_has_dynamic_batch_and_matches_torch(cnn: ImportedModel, cnn_module) -> None:  # type: ignore[no-untyped-def]
    assert cnn.spec.inputs[0].shape == ("batch", 3, 32, 32)
    assert cnn.spec.output_names == ["logits"]
    assert cnn.export_check["outputs"]["logits"]["within_tolerance"]
    assert cnn.source.kind == "torch" and "SmallCNN" in cnn.source.description
    x = np.random.default_rng(5).standard_normal((7, 3, 32, 32)).astype(np.float32)
    with rtinfer.load(cnn, "onnxruntime", threads=1) as session:
        got = session.run({"image": x})["logits"]
    with torch.no_grad():
        want = cnn_module(torch.from_numpy(x)).numpy()
    assert got.shape == (7, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_batch_one_example_still_exports_a_dynamic_batch(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Tanh()).eval()
    model = rtinfer.import_model(net, (torch.randn(1, 6),), input_names=["features"],
                                 out_dir=tmp_path)
    assert model.spec.inputs[0].shape == ("batch", 6)
    assert model.spec.output_names == ["output"]
    with rtinfer.load(model, threads=1) as session:
        assert session.run({"features": np.ones((5, 6), np.float32)})["output"].shape == (5, 3)


class _Stateful(torch.nn.Module):
    """Counts its calls in Python: the export freezes the count, so it cannot match eager."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.calls


def test_export_that_differs_from_torch_is_rejected_with_the_difference(tmp_path: Path) -> None:
    with pytest.raises(ExportMismatchError, match=r"output 'output' differs by up to [\d.]+ "
                       r".*beyond atol=0.0001 \+ rtol=0.001"):
        rtinfer.import_model(_Stateful(), {"x": torch.ones(2, 3)}, out_dir=tmp_path)


def test_torch_module_needs_example_inputs() -> None:
    with pytest.raises(ValueError, match="needs example_inputs"):
        rtinfer.import_model(torch.nn.Linear(2, 2))


def test_dynamic_axes_must_name_real_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown input 'y'"):
        rtinfer.import_model(torch.nn.Linear(2, 2), {"x": torch.ones(2, 2)},
                             dynamic_axes={"y": {1: "seq"}}, out_dir=tmp_path)


@pytest.mark.slow
def test_minilm_folder_exports_with_batch_and_sequence_axes(minilm: ImportedModel) -> None:
    assert minilm.spec.input_names == ["input_ids", "token_type_ids", "attention_mask"]
    for t in minilm.spec.inputs:
        assert t.dtype == "int64" and t.shape == ("batch", "sequence")
    assert minilm.spec.outputs[0].shape == ("batch", "sequence", 384)
    assert minilm.source.kind == "transformers"
    assert all(r["within_tolerance"] for r in minilm.export_check["outputs"].values())


@pytest.mark.slow
def test_minilm_second_import_reuses_the_cache(minilm: ImportedModel, minilm_folder: Path) -> None:
    again = rtinfer.import_model(minilm_folder)
    assert again.path == minilm.path
    assert again.torch_module is None  # not loaded until the torch engine asks for it
    assert again.load_torch() is not None
