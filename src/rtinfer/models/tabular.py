"""Import scikit-learn estimators and XGBoost models through ONNX (skl2onnx / onnxmltools).

    model = from_tabular(clf, X_train[:64])
    # inputs:  input float32 (batch, 30)
    # outputs: label int64 (batch,)   probabilities float32 (batch, 2)

Classifiers are converted without the ZipMap operator, so probabilities come out as a plain
float tensor that every engine (and the serving protocols) can carry. The conversion is accepted
only if ONNX Runtime reproduces the estimator's ``predict_proba`` (or ``predict``) on the
example rows within tolerance.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer.errors import ExportError, UnsupportedModelError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.models.onnx_file import load_onnx

__all__ = ["from_tabular", "is_tabular_model"]

_TARGET_OPSET = 17  # supported by skl2onnx, onnxmltools, ORT and OpenVINO alike
_ML_OPSET = 3


def is_tabular_model(obj: Any) -> bool:
    module = type(obj).__module__
    return module.startswith(("sklearn.", "xgboost.")) and hasattr(obj, "predict")


def from_tabular(
    estimator: Any,
    example_inputs: np.ndarray,
    *,
    input_name: str = "input",
    out_dir: str | Path | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ImportedModel:
    """Convert a fitted scikit-learn estimator/pipeline or XGBoost model to ONNX and verify it.

    ``example_inputs`` is a 2-D float array of real rows (e.g. ``X_train[:64]``): it fixes the
    feature count and is what the conversion is checked on.
    """
    if not is_tabular_model(estimator):
        raise TypeError(
            f"expected a fitted scikit-learn estimator or XGBoost model, "
            f"got {type(estimator).__name__}"
        )
    x = np.asarray(example_inputs, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"example_inputs must be a non-empty 2-D array (rows, features), got shape {x.shape}"
        )
    proto = _convert(estimator, x, input_name)
    # Converters name the graph with a random UUID; a fixed name makes the bytes (and so the
    # model hash) repeat exactly when the same estimator is converted twice.
    proto.graph.name = type(estimator).__name__
    owned = out_dir is None
    out_dir = Path(tempfile.mkdtemp(prefix="rtinfer-tabular-")) if out_dir is None else out_dir
    path = Path(out_dir) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = proto.SerializeToString()
    path.write_bytes(data)
    kind = "xgboost" if type(estimator).__module__.startswith("xgboost.") else "sklearn"
    source = Source(kind, f"{kind} {type(estimator).__name__} ({x.shape[1]} features)",
                    hashlib.sha256(data).hexdigest())
    model = load_onnx(path, source=source)
    if owned:
        model.own_folder(Path(out_dir))
    model.export_check = _verify(model, estimator, x, input_name, atol, rtol)
    return model


def _convert(estimator: Any, x: np.ndarray, input_name: str) -> Any:
    n_features = x.shape[1]
    if type(estimator).__module__.startswith("xgboost."):
        onnxmltools = require("onnxmltools", "Importing XGBoost models")
        from onnxmltools.convert.common.data_types import FloatTensorType

        try:
            return onnxmltools.convert_xgboost(
                # onnxmltools picks the highest opset its XGBoost converter supports (15 today).
                estimator, initial_types=[(input_name, FloatTensorType([None, n_features]))],
            )
        except Exception as exc:
            raise ExportError(f"onnxmltools could not convert {type(estimator).__name__}: "
                              f"{exc}") from exc
    skl2onnx = require("skl2onnx", "Importing scikit-learn models")
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(step): {"zipmap": False} for step in _steps(estimator)
               if hasattr(step, "predict_proba")}
    try:
        return skl2onnx.convert_sklearn(
            estimator, initial_types=[(input_name, FloatTensorType([None, n_features]))],
            options=options, target_opset={"": _TARGET_OPSET, "ai.onnx.ml": _ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises RuntimeError/NameError for unknown estimators
        raise UnsupportedModelError(
            f"skl2onnx could not convert {type(estimator).__name__}: {exc}. Custom estimators "
            "need a registered skl2onnx converter"
        ) from exc


def _steps(estimator: Any) -> list[Any]:
    """The estimator and, for pipelines, every step inside it."""
    steps = [estimator]
    for _, step in getattr(estimator, "steps", []):
        steps += _steps(step)
    return steps


def _verify(model: ImportedModel, estimator: Any, x: np.ndarray, input_name: str,
            atol: float, rtol: float) -> dict[str, Any]:
    from rtinfer.models.torch_export import verify_export

    outputs = model.spec.outputs
    if hasattr(estimator, "predict_proba"):
        # The float output with one column per class is the probability tensor, whatever
        # the converter named it ("probabilities" or "output_probability").
        prob = next(t for t in outputs if len(t.shape) == 2 and t.dtype.startswith("float"))
        reference = {prob.name: np.asarray(estimator.predict_proba(x), dtype=np.float32)}
    else:
        pred = outputs[0]
        shape = (len(x), *[d for d in pred.shape[1:] if isinstance(d, int)])
        reference = {pred.name: np.asarray(estimator.predict(x), dtype=np.float32)
                     .reshape(shape)}
    return verify_export(model, {input_name: x}, reference, atol=atol, rtol=rtol)
