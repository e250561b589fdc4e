"""Artifacts: a Triton-compatible repository entry whose manifest guards its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import rtinfer
from rtinfer import ArtifactError, ArtifactIntegrityError
from rtinfer.deploy.pbtxt import triton_config
from rtinfer.models import ImportedModel


def test_save_writes_layout_manifest_and_config(tmp_path: Path, cnn: ImportedModel) -> None:
    art = rtinfer.save_artifact(cnn, tmp_path, "cnn", recipe={"format_version": 1,
                                                             "passes": [{"name": "none"}]})
    assert art.path == tmp_path / "cnn" / "1"
    assert sorted(p.name for p in art.path.iterdir()) == ["manifest.json", "model.onnx"]
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["source"]["sha256"] == cnn.source.sha256
    assert manifest["recipe"]["passes"] == [{"name": "none"}]
    assert manifest["spec"] == cnn.spec.to_dict()
    assert manifest["files"]["model.onnx"]["bytes"] == (art.path / "model.onnx").stat().st_size
    assert manifest["environment"]["cpu"]["model"]
    assert "onnxruntime" in manifest["environment"]["versions"]
    assert manifest["measurements"]["fidelity"]["export_check"]["outputs"]["logits"][
        "within_tolerance"]


def test_config_is_a_valid_triton_model_config(tmp_path: Path, cnn: ImportedModel) -> None:
    rtinfer.save_artifact(cnn, tmp_path, "cnn", max_batch_size=16, threads=2, instances=1)
    config = text_format.Parse((tmp_path / "cnn" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.name == "cnn" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [(i.name, list(i.dims)) for i in config.input] == [("image", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    assert config.HasField("dynamic_batching")


def test_config_for_scalar_outputs_and_sequences(minilm_spec_like: rtinfer.ModelSpec) -> None:
    config = text_format.Parse(triton_config("m", minilm_spec_like),
                               model_config_pb2.ModelConfig())
    assert [list(i.dims) for i in config.input] == [[-1]]
    label = config.output[0]
    assert list(label.dims) == [1] and list(label.reshape.shape) == []


@pytest.fixture
def minilm_spec_like() -> rtinfer.ModelSpec:
    return rtinfer.ModelSpec(
        (rtinfer.TensorSpec("input_ids", "int64", ("batch", "sequence")),),
        (rtinfer.TensorSpec("label", "int64", ("batch",)),),
    )


def test_versions_increment_and_model_folder_loads_latest(tmp_path: Path,
                                                          cnn: ImportedModel) -> None:
    first = rtinfer.save_artifact(cnn, tmp_path, "cnn")
    second = rtinfer.save_artifact(cnn, tmp_path, "cnn")
    assert (first.version, second.version) == (1, 2)
    assert rtinfer.load_artifact(tmp_path / "cnn").version == 2
    with pytest.raises(ArtifactError, match="already exists"):
        rtinfer.save_artifact(cnn, tmp_path, "cnn", version=2)
    assert not [p for p in (tmp_path / "cnn").iterdir() if p.name.startswith(".")]


def test_artifact_runs_like_the_original(tmp_path: Path, cnn: ImportedModel) -> None:
    art = rtinfer.save_artifact(cnn, tmp_path, "cnn")
    x = cnn.spec.example_inputs(batch=3)
    with rtinfer.load(cnn, threads=1) as a, rtinfer.load(art.path, threads=1) as b:
        np.testing.assert_array_equal(a.run(x)["logits"], b.run(x)["logits"])


def test_an_artifact_loads_on_the_engine_it_was_chosen_for(
        tmp_path: Path, cnn: ImportedModel, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = rtinfer.save_artifact(cnn, tmp_path, "ov", engine="openvino")
    plain = rtinfer.save_artifact(cnn, tmp_path, "plain")
    with rtinfer.load(chosen.path, threads=1) as a, \
            rtinfer.load(chosen.path.parent, threads=1) as b, \
            rtinfer.load(chosen.path, "onnxruntime", threads=1) as c, \
            rtinfer.load(plain.path, threads=1) as d:
        # the version folder and the model folder (its latest version) alike; an explicit
        # engine wins; no recorded engine means the default
        assert (a.engine, b.engine, c.engine, d.engine) == (
            "openvino", "openvino", "onnxruntime", "onnxruntime")
    elsewhere = rtinfer.save_artifact(cnn, tmp_path, "elsewhere", engine="openvino")
    # A machine without OpenVINO: the artifact loads on the default engine, with a warning.
    monkeypatch.setattr("rtinfer.engines.available_engines", lambda: ["onnxruntime"])
    with caplog.at_level("WARNING", logger="rtinfer"), \
            rtinfer.load(elsewhere.path, threads=1) as e:
        assert e.engine == "onnxruntime"
    assert "chosen to run on openvino, which is not installed here" in caplog.text


def test_tampered_model_file_is_refused(tmp_path: Path, cnn: ImportedModel) -> None:
    art = rtinfer.save_artifact(cnn, tmp_path, "cnn")
    model_file = art.path / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the weights
    model_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"model.onnx does not match manifest.json: "
                       r"sha256 .* expected .*Restore the original file or re-create"):
        rtinfer.load(art.path)


def test_missing_file_is_refused(tmp_path: Path, cnn: ImportedModel) -> None:
    art = rtinfer.save_artifact(cnn, tmp_path, "cnn")
    (art.path / "model.onnx").unlink()
    with pytest.raises(ArtifactIntegrityError, match="listed in manifest.json but missing"):
        rtinfer.load_artifact(art.path)


def test_edited_spec_is_refused(tmp_path: Path, cnn: ImportedModel) -> None:
    art = rtinfer.save_artifact(cnn, tmp_path, "cnn")
    manifest = json.loads((art.path / "manifest.json").read_text())
    manifest["spec"]["inputs"][0]["dtype"] = "float64"
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="spec in .* does not match"):
        rtinfer.load_artifact(art.path)


def test_bad_names_and_paths(tmp_path: Path, cnn: ImportedModel) -> None:
    with pytest.raises(ValueError, match="model name '../evil'"):
        rtinfer.save_artifact(cnn, tmp_path, "../evil")
    with pytest.raises(ArtifactError, match="holds no manifest.json"):
        rtinfer.load_artifact(tmp_path)
