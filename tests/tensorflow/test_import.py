"""Keras, SavedModel and .tflite models come in, verified, and run on every engine that can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtinfer
from rtinfer.errors import (
    EngineUnavailableError,
    ExportError,
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


def test_saved_model_initializer_never_runs(tmp_path: Path) -> None:
    """Loading a SavedModel runs its resources' initializers: a model whose initializer writes
    a file is refused before TensorFlow loads it, and the file is never written."""
    import tensorflow as tf

    target = tmp_path / "written-by-the-model"

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self) -> Any:
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="r")

        def _initialize(self) -> Any:
            tf.io.write_file(str(target), "x")
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    class Model(tf.Module):
        def __init__(self) -> None:
            self.resource = Resource()

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"y": x * 2.0}

    module = Model()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    with pytest.raises(UnsupportedModelError, match=r"\['WriteFile'\].*before TensorFlow loads"):
        rtinfer.import_model(tmp_path / "sm")
    assert not target.exists()


def test_asset_outside_the_folder_is_refused(keras_mlp: Any, tmp_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    keras_mlp.export(str(tmp_path / "sm"), verbose=False)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "sm" / "saved_model.pb").read_bytes())
    saved.meta_graphs[0].asset_file_def.add(filename="../../etc/hostname")
    (tmp_path / "sm" / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(UnsupportedModelError, match="asset '../../etc/hostname'"):
        rtinfer.import_model(tmp_path / "sm")


def test_flex_ops_are_named_with_the_fix(tmp_path: Path) -> None:
    import tensorflow as tf

    class Inverse(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 3, 3), tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"y": tf.linalg.inv(x)}

    module = Inverse()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    (tmp_path / "flex.tflite").write_bytes(converter.convert())
    with pytest.raises(ModelLoadError, match=r"Flex: FlexMatrixInverse.*TFLITE_BUILTINS only"):
        rtinfer.import_model(tmp_path / "flex.tflite")
    with pytest.raises(ExportError, match=r"no ONNX conversion for \['MatrixInverse'\]"):
        rtinfer.import_model(tmp_path / "sm")


def test_in_memory_keras_model_is_converted_once_and_tflite_loads_on_litert(
        keras_cnn: Any, tmp_path: Path) -> None:
    import tensorflow as tf

    assert rtinfer.import_model(keras_cnn).path == rtinfer.import_model(keras_cnn).path
    path = tmp_path / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_cnn).convert())
    with rtinfer.load(path, threads=1) as s:  # no engine named: a .tflite runs on LiteRT
        assert s.engine == "litert"
    assert rtinfer.engines.chosen_engine(str(path)) == "litert"


def test_tflite_runs_with_the_litert_extra_alone(keras_cnn: Any, tmp_path: Path) -> None:
    """rtinfer[litert] without TensorFlow: a .tflite file imports and runs, nothing imports
    TensorFlow, Keras or tf2onnx (they are made unimportable in the child process)."""
    import subprocess
    import sys

    import tensorflow as tf

    path = tmp_path / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_cnn).convert())
    code = (
        "import sys\n"
        "for m in ('tensorflow', 'keras', 'tf2onnx'): sys.modules[m] = None\n"
        "import numpy as np, rtinfer\n"
        f"s = rtinfer.load({str(path)!r}, threads=1)\n"
        "x = np.ones((2, 32, 32, 3), np.float32)\n"
        "print(s.engine, s.run({'image': x})['output_0'].shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "litert (2, 10)"


def test_advise_measures_litert_for_the_models_it_runs(keras_cnn: Any, cnn: Any,
                                                      tmp_path: Path) -> None:
    import tensorflow as tf

    keras_advice = rtinfer.advise(keras_cnn, threads=[1], window_s=0.05)
    measured = {c["engine"] for c in keras_advice["candidates"]}
    assert {"litert", "onnxruntime", "openvino"} <= measured
    path = tmp_path / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_cnn).convert())
    tflite_advice = rtinfer.advise(path, threads=[1], window_s=0.05)
    assert {c["engine"] for c in tflite_advice["candidates"]} == {"litert"}
    assert "only engine='litert' runs" in tflite_advice["skipped"]["onnxruntime"]
    onnx_advice = rtinfer.advise(cnn, threads=[1], window_s=0.05)  # no TensorFlow form
    assert "litert" in onnx_advice["skipped"]


def test_inspect_describes_a_tflite_file(keras_cnn: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import tensorflow as tf
    from rtinfer.cli import app

    path = tmp_path / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_cnn).convert())
    res = CliRunner().invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "CONV_2D" in res.output and "not counted (.tflite)" in res.output


def test_weights_behind_a_linked_folder_count_in_the_digest(keras_mlp: Any,
                                                             tmp_path: Path) -> None:
    """A SavedModel whose variables/ is a link (allowed inside a repository): the content
    digest, the cache key, covers the weights behind it, so new weights mean a new conversion."""
    import shutil

    keras_mlp.export(str(tmp_path / "plain"), verbose=False)
    shutil.copytree(tmp_path / "plain", tmp_path / "linked")
    shutil.move(tmp_path / "linked" / "variables", tmp_path / "weights")
    (tmp_path / "linked" / "variables").symlink_to(tmp_path / "weights")
    plain = rtinfer.import_model(tmp_path / "plain")
    linked = rtinfer.import_model(tmp_path / "linked")
    assert linked.source.sha256 == plain.source.sha256
