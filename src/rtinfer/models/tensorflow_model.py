"""Import Keras and TensorFlow models: ``.keras`` files, in-memory Keras models, SavedModels.

    import_model("classifier.keras")           # Keras 3 file (safe mode: no lambda bytecode)
    import_model(keras_model)                  # in memory
    import_model("tfserving/fraud/3")          # a SavedModel folder (saved_model.pb)

Each becomes ONNX through tf2onnx from the SavedModel's ``serving_default`` signature (a Keras
model is exported to one first, with ``model.export``, the path Keras itself uses), named by
the signature's keys. The export is accepted only when ONNX Runtime reproduces TensorFlow's
outputs within the torch path's tolerance (``|onnx - tf| <= 1e-4 + 1e-3·|tf|``). The
SavedModel stays attached (:attr:`ImportedModel.tensorflow`): LiteRT runs it converted to
``.tflite`` (:func:`tflite_of`) and TFLite's quantizer starts from it.

Conversions are cached by content (``$RTINFER_CACHE/tensorflow``), so a served TF Serving
folder is converted once, not at every start. Before anything of a SavedModel runs, its
serving graph is read for ops that reach outside the model (file reads and writes, Python
callbacks): such a model is refused, since importing it would run them.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._cache import cache_dir
from rtinfer._deps import require
from rtinfer._hashing import sha256_file, sha256_files
from rtinfer.errors import ExportError, ModelLoadError, UnsupportedModelError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.models.onnx_file import load_onnx
from rtinfer.models.tflite_file import SIGNATURE

__all__ = ["KERAS_SUFFIXES", "OPSET", "convert_tflite", "from_keras", "from_saved_model",
           "is_keras_model", "is_saved_model", "tflite_of"]

KERAS_SUFFIXES = (".keras", ".h5")
OPSET = 17
# Ops that read or write files or call back into Python: a served model never needs them.
_OUTSIDE_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "ImmutableConst", "PyFunc",
    "PyFuncStateless", "EagerPyFunc", "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2",
    "RestoreSlice", "MergeV2Checkpoints", "ShardedFilename", "WholeFileReader",
    "WholeFileReaderV2", "TextLineDataset", "TFRecordDataset", "FixedLengthRecordDataset",
    "PrintV2", "Print", "DebugIdentity", "DebugIdentityV2",
})


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def is_keras_model(obj: Any) -> bool:
    keras = sys.modules.get("keras")  # a Keras model can only exist if keras is imported
    return keras is not None and isinstance(obj, keras.Model)


def from_keras(model: Any, *, use_cache: bool = True) -> ImportedModel:
    """A ``.keras`` / ``.h5`` file (path) or an in-memory Keras model, exported to a SavedModel
    and imported as :func:`from_saved_model` does."""
    tf = _tensorflow()
    if isinstance(model, (str, Path)):
        path = Path(model)
        digest = sha256_file(path)
        folder = _cache_folder(digest) / "saved_model"
        if not (use_cache and is_saved_model(folder)):
            _export_keras(_load_keras(path), folder)
        source = Source("keras", f"Keras file {path}", digest)
        return from_saved_model(folder, source=source, use_cache=use_cache)
    tmp = Path(tempfile.mkdtemp(prefix="rtinfer-keras-"))
    _export_keras(model, tmp / "saved_model")
    files = [p for p in (tmp / "saved_model").rglob("*") if p.is_file()]
    digest = sha256_files(files, tmp / "saved_model")
    name = getattr(model, "name", type(model).__name__)
    imported = from_saved_model(tmp / "saved_model", source=Source(
        "keras", f"Keras model {name} (TensorFlow {tf.__version__})", digest), use_cache=False,
        out_dir=tmp)
    imported.own_folder(tmp)
    return imported


def from_saved_model(folder: str | Path, *, source: Source | None = None,
                     use_cache: bool = True, out_dir: Path | None = None) -> ImportedModel:
    """Convert the SavedModel in ``folder`` to ONNX (or reuse a cached conversion) and verify
    it against TensorFlow; see the module docstring."""
    folder = Path(folder).resolve()
    if not is_saved_model(folder):
        raise ModelLoadError(f"'{folder}' is not a SavedModel folder (no saved_model.pb)")
    files = [p for p in folder.rglob("*") if p.is_file()]
    digest = sha256_files(files, folder)
    source = source or Source("saved_model", f"SavedModel {folder}", digest)
    cached = _cache_folder(digest)
    if use_cache and (model := _cached(cached, source, folder)) is not None:
        return model
    work = Path(tempfile.mkdtemp(prefix="rtinfer-tf-", dir=out_dir))
    try:
        model = _convert(folder, source, work / "model.onnx")
        if not use_cache:
            return model
        check = {**model.export_check, "onnx_sha256": sha256_file(work / "model.onnx")}
        (work / "check.json").write_text(json.dumps(check))
        cached.mkdir(parents=True, exist_ok=True)
        for name in ("model.onnx", "check.json"):  # check.json last: it marks the export done
            shutil.copyfile(work / name, cached / f".{name}")
            (cached / f".{name}").rename(cached / name)
    finally:
        if use_cache:
            shutil.rmtree(work, ignore_errors=True)
    model = _cached(cached, source, folder)
    if model is None:
        raise ExportError(f"the conversion of {source.description} in {cached} changed while "
                          "it was written; import it again")
    return model


def _cached(cached: Path, source: Source, folder: Path) -> ImportedModel | None:
    """The conversion in ``cached`` when it is whole (its hash as check.json records it)."""
    if not (cached / "check.json").is_file():
        return None
    check = json.loads((cached / "check.json").read_text())
    if sha256_file(cached / "model.onnx") != check.pop("onnx_sha256", None):
        return None
    model = load_onnx(cached / "model.onnx", source=source)
    model.export_check, model.tensorflow = check, folder
    return model


def tflite_of(model: ImportedModel) -> Path:
    """The float32 ``.tflite`` of ``model``'s TensorFlow form, converted once per content."""
    if model.tensorflow is None:
        raise ExportError(f"{model.source.description} has no TensorFlow form to convert")
    out = _cache_folder(model.source.sha256) / "float32.tflite"
    if not out.is_file():
        convert_tflite(model.tensorflow, out)
    return out


def convert_tflite(saved_model: Path, out: Path,
                   configure: Callable[[Any], None] | None = None) -> Path:
    """``TFLiteConverter.from_saved_model`` with TFLite's built-in ops only (what the LiteRT
    runtime runs); ``configure(converter)`` sets the optimizations (quantization). Written
    under a temporary name and renamed, so a reader never sees half a file."""
    tf = _tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if configure is not None:
        configure(converter)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # ConverterError carries the MLIR diagnostics
        text = str(exc)
        hint = ("the model uses TensorFlow ops that TFLite has no built-in kernel for (they "
                "would need the Flex delegate, which the LiteRT runtime lacks): replace those "
                "layers, or serve the model's ONNX form on onnxruntime"
                if "flex" in text.lower() or "select_tf_ops" in text.lower()
                or "not supported" in text.lower() else "see the converter's message")
        first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()),
                     text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise ExportError(f"TFLite could not convert {saved_model}: {first[:300]}; {hint}") \
            from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{id(flatbuffer)}")
    tmp.write_bytes(flatbuffer)
    tmp.rename(out)
    return out


def _tensorflow() -> Any:
    tf = require("tensorflow", "Importing Keras and TensorFlow models")
    require("tf2onnx", "Importing Keras and TensorFlow models")
    return tf


def _cache_folder(digest: str) -> Path:
    """Conversions of one model's content by this TensorFlow and tf2onnx."""
    versions = f"tf{_tensorflow().__version__}-tf2onnx{metadata.version('tf2onnx')}"
    return cache_dir() / "tensorflow" / f"{digest[:16]}-{versions}"


def _load_keras(path: Path) -> Any:
    keras = require("keras", "Importing Keras models")
    try:
        # safe_mode: a Lambda layer's pickled bytecode is refused rather than run.
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if "Could not locate" in text or "Unknown layer" in text or "custom" in text.lower():
            raise ModelLoadError(
                f"'{path}' uses a custom layer or object Keras does not know: {text[:300]}. "
                "Register it (@keras.saving.register_keras_serializable()) in code you import "
                "before loading, then pass the loaded model object to rtinfer") from exc
        if "safe_mode" in text or "lambda" in text.lower():
            raise UnsupportedModelError(
                f"'{path}' holds a Lambda layer's Python bytecode, which rtinfer never runs "
                "(Keras' safe mode). If you trust the file, load it yourself with "
                "safe_mode=False and pass the model object") from exc
        raise ModelLoadError(f"'{path}' is not a readable Keras model: {text[:300]}") from exc
    except OSError as exc:
        raise ModelLoadError(f"'{path}' is not a readable Keras model: {exc}") from exc


def _export_keras(model: Any, folder: Path) -> None:
    """Keras' own SavedModel export into ``folder``, atomically. A functional model's outputs
    keep their layers' names (``logits``, not Keras' ``output_0``): the budget recognises
    class scores by name, so agreement with the original stays guarded."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        if _named_outputs(model):
            _export_named(model, tmp / "sm")
        else:
            model.export(str(tmp / "sm"), format="tf_saved_model", verbose=False)
        shutil.rmtree(folder, ignore_errors=True)
        (tmp / "sm").rename(folder)
    except Exception as exc:
        raise ExportError(f"Keras could not export {getattr(model, 'name', 'the model')} as a "
                          f"SavedModel: {' '.join(str(exc).split())[:300]}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _named_outputs(model: Any) -> list[str]:
    """A functional model's output names when its outputs are a tensor or a list of them."""
    names = list(getattr(model, "output_names", None) or [])
    inputs = getattr(model, "inputs", None)
    if not names or not inputs or isinstance(getattr(model, "output", None), dict):
        return []
    return names if len(set(names)) == len(names) else []


def _export_named(model: Any, path: Path) -> None:
    keras = require("keras", "Importing Keras models")
    tf = _tensorflow()
    names = _named_outputs(model)
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in model.inputs]

    def serve(*args: Any) -> dict[str, Any]:
        out = model(list(args) if len(args) > 1 else args[0], training=False)
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out], strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=specs)
    archive.write_out(str(path), verbose=False)


def _convert(folder: Path, source: Source, path: Path) -> ImportedModel:
    """tf2onnx on the serving signature, batch axes named, verified against TensorFlow."""
    tf = _tensorflow()
    import tf2onnx

    from rtinfer.models.torch_export import DEFAULT_ATOL, DEFAULT_RTOL, verify_export

    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"TensorFlow could not load the SavedModel {folder}: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SIGNATURE not in signatures:
        raise ModelLoadError(
            f"the SavedModel {folder} has no '{SIGNATURE}' signature (it has "
            f"{sorted(signatures) or 'none'}); save it with one: Keras' model.export(dir), or "
            "tf.saved_model.save(obj, dir, signatures={'serving_default': fn})")
    sig = signatures[SIGNATURE]
    _refuse_outside_ops(sig, folder)
    specs = sig.structured_input_signature[1]
    names = list(specs)
    if sig.structured_input_signature[0] or not names:
        raise ModelLoadError(f"the '{SIGNATURE}' signature of {folder} takes no named inputs")
    outputs = sig.structured_outputs
    if not isinstance(outputs, dict):
        raise ModelLoadError(f"the '{SIGNATURE}' signature of {folder} returns "
                             f"{type(outputs).__name__}, not named outputs")
    input_signature = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]

    @tf.function(input_signature=input_signature)
    def call(*args: Any) -> Any:
        return sig(**dict(zip(names, args, strict=True)))

    try:
        proto, _ = tf2onnx.convert.from_function(call, input_signature=input_signature,
                                                 opset=OPSET)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert {source.description}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    _name_batch_axes(proto, {n: specs[n].shape for n in names},
                     {k: v.shape for k, v in outputs.items()})
    path.write_bytes(proto.SerializeToString())
    model = load_onnx(path, source=source)
    if sorted(model.spec.output_names) != sorted(outputs):
        raise ExportError(f"tf2onnx named the outputs {model.spec.output_names}, the signature "
                          f"{sorted(outputs)}")
    feeds = model.spec.example_inputs(batch=2)
    feeds = {k: _probe(v) for k, v in feeds.items()}
    reference = {k: np.asarray(v) for k, v in sig(**{k: tf.constant(v)
                                                      for k, v in feeds.items()}).items()}
    model.export_check = verify_export(model, feeds, reference, atol=DEFAULT_ATOL,
                                       rtol=DEFAULT_RTOL)
    model.tensorflow = folder
    return model


def _probe(value: np.ndarray) -> np.ndarray:
    """Verification inputs: normal floats; small non-negative integers (token ids, indices)."""
    rng = np.random.default_rng(0)
    if value.dtype.kind == "f":
        return rng.standard_normal(value.shape).astype(value.dtype)
    if value.dtype.kind in "iu":
        return rng.integers(0, 2, value.shape).astype(value.dtype)
    return value


def _refuse_outside_ops(sig: Any, folder: Path) -> None:
    graph = sig.graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    bad = sorted(ops & _OUTSIDE_OPS)
    if bad:
        raise UnsupportedModelError(
            f"the SavedModel {folder} runs {bad} in its serving signature: ops that read or "
            "write files or call Python, which a served model never needs and rtinfer will not "
            "run. Export the model without them")


def _name_batch_axes(proto: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """The leading axis TensorFlow leaves free becomes ``batch`` (tf2onnx writes ``unk__N``),
    so every input and output shares one batch dimension the server can batch along."""
    for values, shapes in ((proto.graph.input, inputs), (proto.graph.output, outputs)):
        for value in values:
            shape = shapes.get(value.name)
            if shape is None or shape.rank is None or shape.rank == 0 or shape[0] is not None:
                continue
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "batch"
