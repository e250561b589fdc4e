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
folder is converted once, not at every start. Before TensorFlow loads a SavedModel (loading
runs its initializers), ``saved_model.pb`` is read as a protobuf: every graph and function in
it is checked for ops that reach outside the model (file reads and writes, datasets, readers,
summaries, Python callbacks; the checkpoint ops of the saver excepted, which restore
the folder's own variables), and every asset must be a relative path inside the folder. A
model that fails is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
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
# Bumped when the conversion changes (naming, checks): older cached conversions are not reused.
CONVERSION_VERSION = 1
# Ops that reach outside the model: by name part (ReadFile, TFRecordDatasetV2, WholeFileReader,
# WriteScalarSummary, EagerPyFunc, DebugIdentityV3, PrintV2, ...) and by name.
_OUTSIDE_PARTS = ("File", "Dataset", "Reader", "Summary", "PyFunc", "Debug", "Print")
_OUTSIDE_OPS = frozenset({
    "ImmutableConst", "LoadAndRemapMatrix", "GenerateVocabRemapping", "DecodeProtoV2",
    "EncodeProto", "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
    "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec",
})
# The checkpoint ops a SavedModel's saver uses to restore its own variables (top level and in
# the functions its saver_def names).
_CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                             "ShardedFilespec"})


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def is_keras_model(obj: Any) -> bool:
    keras = sys.modules.get("keras")  # a Keras model can only exist if keras is imported
    return keras is not None and isinstance(obj, keras.Model)


def from_keras(model: Any, *, use_cache: bool = True) -> ImportedModel:
    """A ``.keras`` / ``.h5`` file (path) or an in-memory Keras model, exported to a SavedModel
    and imported as :func:`from_saved_model` does."""
    tf = _tensorflow()
    digest: str | None
    if isinstance(model, (str, Path)):
        digest, loaded = sha256_file(model), None
        source = Source("keras", f"Keras file {model}", digest)
    else:
        # An in-memory model is keyed by its architecture and weights (a SavedModel export of
        # the same model differs byte for byte); one Keras cannot describe is not cached.
        digest, loaded = _keras_digest(model), model
        name = getattr(model, "name", type(model).__name__)
        source = Source("keras", f"Keras model {name} (TensorFlow {tf.__version__})",
                        digest or "")
    def keras_model() -> Any:  # a file is opened only when it must be exported
        return loaded if loaded is not None else _load_keras(Path(model))

    if digest is not None and use_cache:
        folder = _cache_folder(digest) / "saved_model"
        if not is_saved_model(folder):
            _export_keras(keras_model(), folder)
        return from_saved_model(folder, source=source)
    tmp = Path(tempfile.mkdtemp(prefix="rtinfer-keras-"))
    try:
        _export_keras(keras_model(), tmp / "saved_model")
        if not source.sha256:
            source = Source(source.kind, source.description,
                            sha256_files(_files(tmp / "saved_model"), tmp / "saved_model"))
        imported = from_saved_model(tmp / "saved_model", source=source, use_cache=False,
                                    out_dir=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    imported.own_folder(tmp)
    return imported


def _keras_digest(model: Any) -> str | None:
    """sha256 of a Keras model's config and weights, or None when Keras cannot describe it
    (a subclassed model without get_config)."""
    try:
        config = model.to_json()
    except Exception:  # NotImplementedError and friends: not serializable, so not cached
        return None
    digest = hashlib.sha256(config.encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def from_saved_model(folder: str | Path, *, source: Source | None = None,
                     use_cache: bool = True, out_dir: Path | None = None) -> ImportedModel:
    """Convert the SavedModel in ``folder`` to ONNX (or reuse a cached conversion) and verify
    it against TensorFlow; see the module docstring."""
    folder = Path(folder).resolve()
    if not is_saved_model(folder):
        raise ModelLoadError(f"'{folder}' is not a SavedModel folder (no saved_model.pb)")
    digest = sha256_files(_files(folder), folder)
    source = source or Source("saved_model", f"SavedModel {folder}", digest)
    cached = _cache_folder(digest)
    if use_cache and (model := _cached(cached, source, folder)) is not None:
        return model
    work = Path(tempfile.mkdtemp(prefix="rtinfer-tf-", dir=out_dir))
    try:
        model = _convert(folder, source, work / "model.onnx")
        if not use_cache:
            if out_dir is None:
                model.own_folder(work)
            return model
        check = {**model.export_check, "onnx_sha256": sha256_file(work / "model.onnx")}
        (work / "check.json").write_text(json.dumps(check))
        cached.mkdir(parents=True, exist_ok=True)
        for name in ("model.onnx", "check.json"):  # check.json last: it marks the export done
            fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=cached)
            os.close(fd)
            shutil.copyfile(work / name, tmp)
            os.replace(tmp, cached / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if use_cache:
        shutil.rmtree(work, ignore_errors=True)
    model = _cached(cached, source, folder)
    if model is None:
        raise ExportError(f"the conversion of {source.description} in {cached} changed while "
                          "it was written; import it again")
    return model


def _files(folder: Path) -> list[Path]:
    """Every file below ``folder``, linked folders followed (once each: a link back up is a
    loop), so new weights behind a ``variables`` link change the digest."""
    seen: set[str] = set()
    out = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        out += [Path(top, n) for n in names if Path(top, n).is_file()]
    return out


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
    """The float32 ``.tflite`` of ``model``'s TensorFlow form, converted once and kept beside
    its ONNX conversion (in the cache, or in an uncached model's own temporary folder)."""
    if model.tensorflow is None:
        raise ExportError(f"{model.source.description} has no TensorFlow form to convert")
    out = model.path.parent / "float32.tflite"
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
        lower = text.lower()
        hint = ("the model uses TensorFlow ops that TFLite has no built-in kernel for (they "
                "would need the Flex delegate, which the LiteRT runtime lacks): replace those "
                "layers, or serve the model's ONNX form on onnxruntime"
                if "flex" in lower or "select_tf_ops" in lower else
                "an op has no int8 kernel in TFLite: try method='dynamic' or 'float16'"
                if "int8" in lower or "quantiz" in lower else "see the converter's message")
        first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()),
                     text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise ExportError(f"TFLite could not convert {saved_model}: {first[:300]}; {hint}") \
            from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(flatbuffer)
    os.replace(tmp, out)
    return out


def _tensorflow() -> Any:
    tf = require("tensorflow", "Importing Keras and TensorFlow models")
    require("tf2onnx", "Importing Keras and TensorFlow models")
    return tf


def _cache_folder(digest: str) -> Path:
    """Conversions of one model's content by this conversion, TensorFlow and tf2onnx (their
    versions read from the installed packages: a cache hit imports no TensorFlow)."""
    versions = "-".join(f"{name}{_version(name)}" for name in ("tensorflow", "tf2onnx"))
    return (cache_dir() / "tensorflow" /
            f"{digest[:16]}-v{CONVERSION_VERSION}-opset{OPSET}-{versions}")


def _version(name: str) -> str:
    for dist in (name, f"{name}-cpu"):  # tensorflow-cpu installs the module "tensorflow"
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "none"


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
        try:
            (tmp / "sm").rename(folder)
        except OSError:  # another process exported the same content first: keep its copy
            if not is_saved_model(folder):
                raise
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

    _refuse_outside(folder)  # before TensorFlow loads it: loading runs its initializers
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
    specs = sig.structured_input_signature[1]
    names = list(specs)
    if sig.structured_input_signature[0] or not names:
        raise ModelLoadError(f"the '{SIGNATURE}' signature of {folder} takes no named inputs")
    outputs = sig.structured_outputs
    if not isinstance(outputs, dict):
        raise ModelLoadError(f"the '{SIGNATURE}' signature of {folder} returns "
                             f"{type(outputs).__name__}, not named outputs")
    input_signature = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]

    @tf.function(input_signature=input_signature, autograph=False)  # no generated code in /tmp
    def call(*args: Any) -> Any:
        return sig(**dict(zip(names, args, strict=True)))

    try:
        proto, _ = tf2onnx.convert.from_function(call, input_signature=input_signature,
                                                 opset=OPSET)
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert {source.description}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    _name_batch_axes(proto.graph.input, {n: specs[n].shape for n in names})
    path.write_bytes(proto.SerializeToString())
    try:
        model = load_onnx(path, source=source)
    except ModelLoadError as exc:  # tf2onnx leaves ops it cannot convert in the graph
        unknown = sorted({n.op_type for n in proto.graph.node if n.domain == ""
                          and "No Op registered for " + n.op_type in str(exc)})
        raise ExportError(
            f"tf2onnx has no ONNX conversion for {unknown or 'an op'} of "
            f"{source.description}; replace that layer, or convert the model to .tflite "
            "yourself and serve that on litert") from exc
    if sorted(model.spec.output_names) != sorted(outputs):
        raise ExportError(f"tf2onnx named the outputs {model.spec.output_names}, the signature "
                          f"{sorted(outputs)}")
    feeds = {k: _probe(v) for k, v in model.spec.example_inputs(batch=2).items()}
    reference = {k: np.asarray(v) for k, v in sig(**{k: tf.constant(v)
                                                      for k, v in feeds.items()}).items()}
    # An output's free leading axis is the batch only when it follows the inputs' batch (not a
    # data-dependent count: boxes kept, a boolean mask), or the server would split it wrongly.
    _name_batch_axes(proto.graph.output, {k: v.shape for k, v in outputs.items()
                                          if reference[k].ndim and reference[k].shape[0] == 2})
    path.write_bytes(proto.SerializeToString())
    model = load_onnx(path, source=source)
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


def _outside(op: str) -> bool:
    return op in _OUTSIDE_OPS or any(part in op for part in _OUTSIDE_PARTS)


def _refuse_outside(folder: Path) -> None:
    """Refuse a SavedModel whose graphs reach outside it (see the module docstring), read from
    ``saved_model.pb`` without running any of it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as exc:  # DecodeError: truncated or not a SavedModel
        raise ModelLoadError(f"{folder / 'saved_model.pb'} is not a readable SavedModel "
                             f"({type(exc).__name__}); re-export it") from exc
    bad: set[str] = set()
    for graph in saved.meta_graphs:
        for asset in graph.asset_file_def:
            name = asset.filename
            if not name or os.path.isabs(name) or "\\" in name or ".." in Path(name).parts:
                raise UnsupportedModelError(
                    f"the SavedModel {folder} names the asset {name!r}, a path outside its "
                    "assets folder; rtinfer opens no file outside the model. Re-export it")
        saver = _saver_functions(graph)
        bad |= {n.op for n in graph.graph_def.node
                if _outside(n.op) and n.op not in _CHECKPOINT_OPS}
        bad |= {n.op for f in graph.graph_def.library.function for n in f.node_def
                if _outside(n.op) and not (f.signature.name in saver
                                           and n.op in _CHECKPOINT_OPS)}
    if bad:
        raise UnsupportedModelError(
            f"the SavedModel {folder} holds {sorted(bad)}: ops that read or write files or "
            "call Python, which a served model never needs and which loading it could run; "
            "rtinfer refuses it before TensorFlow loads it. Export the model without them")


def _saver_functions(graph: Any) -> set[str]:
    """The functions the meta graph's saver calls to save and restore the folder's variables
    (TF2 writes them as ``__inference__traced_save_N`` / ``..._restore_N``): the only place
    the checkpoint ops belong, found by what the saver names, not by function name."""
    ends = {graph.saver_def.save_tensor_name.split(":")[0], graph.saver_def.restore_op_name}
    return {n.attr["f"].func.name for n in graph.graph_def.node
            if n.name in ends and "f" in n.attr}


def _name_batch_axes(values: Any, shapes: dict[str, Any]) -> None:
    """The leading axis TensorFlow leaves free becomes ``batch`` (tf2onnx writes ``unk__N``)
    for the tensors named in ``shapes``, so they share the dimension the server batches."""
    for value in values:
        shape = shapes.get(value.name)
        if shape is None or shape.rank is None or shape.rank == 0 or shape[0] is not None:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
