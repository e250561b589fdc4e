"""Keras, SavedModel and .tflite models come in, verified, and run on every engine that can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtinfer
from rtinfer.errors import (
    EngineUnavailableError,
    InvalidInputError,
    ModelLoadError,
    UnsupportedModelError,
)

ENGINES = ["onnxruntime", "openvino", "litert"]


def _mlp_feeds(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"amount": rng.standard_normal((n, 4)).astype(np.float32),
            "merchant": rng.standard_normal((n, 3)).astype(np.float32)}


@pytest.mark.parametrize("engine", ENGINES)
def test_keras_cnn_matches_tensorflow_on_every_engine(engine: str, keras_cnn: Any) -> None:
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    want = keras_cnn(x, training=False).numpy()
    model = rtinfer.import_model(keras_cnn)
    assert model.source.kind == "keras" and model.tensorflow is not None
    assert model.spec.input("image").shape == ("batch", 32, 32, 3)
    assert model.export_check["outputs"]["logits"]["within_tolerance"]
    with rtinfer.load(model, engine, threads=1) as session:
        assert session.engine == engine
        got = session.run({"image": x})
    assert list(got) == ["logits"]  # the Keras layer's name, not Keras' export's output_0
    np.testing.assert_allclose(got["logits"], want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_keras_mlp_keeps_names_on_every_engine(engine: str, keras_mlp: Any) -> None:
    feeds = _mlp_feeds()
    want = {k: v.numpy() for k, v in keras_mlp(feeds, training=False).items()}
    model = rtinfer.import_model(keras_mlp)
    assert sorted(model.spec.input_names) == ["amount", "merchant"]
    assert sorted(model.spec.output_names) == ["classes", "score"]
    with rtinfer.load(model, engine, threads=1) as session:
        got = session.run(feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-4, rtol=0)


def test_keras_file_is_converted_once(keras_cnn: Any, tmp_path: Path) -> None:
    path = tmp_path / "cnn.keras"
    keras_cnn.save(path)
    first = rtinfer.import_model(path)
    again = rtinfer.import_model(str(path))
    assert first.source.kind == "keras" and first.source == again.source
    assert again.path == first.path  # the cached conversion, not a new one
    assert (again.tensorflow / "saved_model.pb").is_file()


def test_saved_model_and_tf_serving_base_path(keras_mlp: Any, tmp_path: Path) -> None:
    for version in (1, 2):
        keras_mlp.export(str(tmp_path / "fraud" / str(version)), verbose=False)
    folder = rtinfer.import_model(tmp_path / "fraud" / "1")
    assert folder.source.kind == "saved_model"
    base = rtinfer.import_model(tmp_path / "fraud")  # TF Serving's base path: newest version
    assert base.tensorflow == (tmp_path / "fraud" / "2").resolve()
    feeds = _mlp_feeds()
    with rtinfer.load(base, "litert", threads=1) as s:
        got = s.run(feeds)
    np.testing.assert_allclose(got["score"], keras_mlp(feeds)["score"].numpy(), atol=1e-4)


def test_tflite_file_is_described_by_its_signature(keras_cnn: Any, tmp_path: Path) -> None:
    import tensorflow as tf

    path = tmp_path / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_cnn).convert())
    model = rtinfer.import_model(path)
    assert model.is_tflite and model.source.kind == "tflite"
    assert model.spec.input("image").shape == ("batch", 32, 32, 3)
    x = np.ones((3, 32, 32, 3), np.float32)
    with rtinfer.load(model, "litert", threads=1) as s:
        assert s.run({"image": x})["output_0"].shape == (3, 10)
        with pytest.raises(InvalidInputError, match=r"missing input\(s\) \['image'\]"):
            s.run({})
        with pytest.raises(InvalidInputError, match="input 'image' has dtype float64"):
            s.run({"image": x.astype(np.float64)})
        with pytest.raises(InvalidInputError, match="input 'image' has size 28 on axis 1"):
            s.run({"image": x[:, :28]})
        assert s.run({"image": x[:1]})["output_0"].shape == (1, 10)  # still serves
    with pytest.raises(EngineUnavailableError, match="only engine='litert' runs"):
        rtinfer.load(model, "onnxruntime")


def test_onnx_model_without_tensorflow_form_is_not_for_litert(cnn: Any) -> None:
    with pytest.raises(EngineUnavailableError, match="no TensorFlow form for LiteRT"):
        rtinfer.load(cnn, "litert")


def test_corrupt_tflite_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a readable .tflite model"):
        rtinfer.import_model(bad)


def test_unregistered_custom_layer_names_the_fix(tmp_path: Path) -> None:
    import keras

    class Scale(keras.layers.Layer):  # registered nowhere: the file cannot be rebuilt
        def call(self, x: Any) -> Any:
            return x * 2.0

    inp = keras.Input((3,), name="x")
    keras.Model(inp, Scale()(inp)).save(tmp_path / "custom.keras")
    with pytest.raises(ModelLoadError, match="custom layer.*register_keras_serializable"):
        rtinfer.import_model(tmp_path / "custom.keras")


def test_lambda_layer_bytecode_is_never_run(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((3,), name="x")
    keras.Model(inp, keras.layers.Lambda(lambda t: t + 1.0)(inp)).save(tmp_path / "l.keras")
    with pytest.raises(UnsupportedModelError, match="Lambda layer's Python bytecode"):
        rtinfer.import_model(tmp_path / "l.keras")


def test_saved_model_without_serving_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "nosig"))
    with pytest.raises(ModelLoadError, match="no 'serving_default' signature"):
        rtinfer.import_model(tmp_path / "nosig")


def test_saved_model_that_reads_files_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None,), tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            text = tf.io.read_file("/etc/hostname")
            return {"y": x + tf.cast(tf.strings.length(text), tf.float32)}

    module = Reader()
    tf.saved_model.save(module, str(tmp_path / "reader"),
                        signatures={"serving_default": module.serve})
    with pytest.raises(UnsupportedModelError, match=r"\['ReadFile'\].*read or write files"):
        rtinfer.import_model(tmp_path / "reader")


def test_import_rtinfer_imports_no_tensorflow() -> None:
    import subprocess
    import sys

    code = ("import sys, rtinfer, rtinfer.models, rtinfer.engines; "
            "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'ai_edge_litert') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
