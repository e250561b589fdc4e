"""Tensors from and to the wire, shared by every front end (KServe v2, TF Serving REST).

    from_json("x", [[1, 2], [3, 4]], np.dtype("int8"))   # (2, 2) int8, or InvalidInputError
    as_text("text", np.array([b"hi"], object))           # object array of str, for ONNX strings
    bytes_elements(np.array(["hé"], object))             # [b"h\\xc3\\xa9"]: BYTES on the wire

JSON numbers are checked, never cast silently: a fraction for an integer input, an integer out
of the input's range (300 for INT8, -1 for UINT8, 2**64 for INT64) and a number that overflows
a float type (1e39 for FP32) are 400s naming the input, as are strings, objects and ragged rows
where numbers are expected. BYTES elements are Python ``bytes`` (binary) or ``str`` (JSON) on
the way in; a string input of an ONNX model gets ``str`` (UTF-8 decoded: ONNX Runtime would
otherwise turn ``b"hi"`` into the text ``"b'hi'"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtinfer.errors import InvalidInputError

__all__ = ["as_text", "bytes_elements", "from_json", "object_array", "text_elements"]


def object_array(items: list[Any], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``items`` as an object array (of ``shape``), each element kept as it is: np.array()
    would turn equal-length strings into a fixed-width dtype, or lists into another axis."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out if shape is None else out.reshape(shape)


def from_json(name: str, data: Any, dtype: np.dtype[Any], what: str | None = None
              ) -> np.ndarray:
    """``data`` (numbers, flat or nested lists) as an array of ``dtype``, checked."""
    what = what or dtype.name
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError) as exc:  # numpy refuses ragged nesting
        raise InvalidInputError(f"input '{name}' is ragged (rows of different lengths): "
                                f"{exc}") from None
    if raw.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"input '{name}' must hold {what} numbers; it holds "
            f"{_kind_name(raw)}: check the data, or send the tensor with another datatype")
    if dtype.kind == "b":
        if raw.dtype.kind != "b" and raw.size and not np.isin(raw, (0, 1)).all():
            raise InvalidInputError(f"input '{name}' is {what}: send true/false (or 0/1)")
        return raw.astype(dtype)
    if dtype.kind in "iu":
        integral = raw.dtype.kind != "f" or (np.isfinite(raw).all() and
                                             (np.mod(raw, 1) == 0).all())
        if not integral:
            raise InvalidInputError(f"input '{name}' holds fractional numbers but the model "
                                    f"expects {what}")
        info = np.iinfo(dtype)
        low, high = raw.min() if raw.size else 0, raw.max() if raw.size else 0
        if raw.dtype.kind == "f":  # compare exactly: float(2**63 - 1) rounds up to 2**63
            low, high = int(low), int(high)
        if low < info.min or high > info.max:
            raise InvalidInputError(f"input '{name}' holds numbers outside the range of {what} "
                                    f"[{info.min}, {info.max}]")
        return raw.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = raw.astype(dtype)
    if raw.size and not np.isfinite(cast).all():
        raise InvalidInputError(f"input '{name}' holds numbers too large for {what} (largest "
                                f"{float(np.finfo(dtype).max):.4g})")
    return cast


def _kind_name(raw: np.ndarray) -> str:
    if raw.dtype.kind in "US":
        return "strings"
    return ("values that are not numbers of one shape (ragged rows, objects, nulls or "
            "integers beyond 64 bits)")


def as_text(name: str, array: np.ndarray) -> np.ndarray:
    """An object array of ``str`` for a string model input; bytes must be UTF-8."""
    texts = []
    for i, value in enumerate(array.reshape(-1)):
        if isinstance(value, (bytes, np.bytes_)):
            try:
                texts.append(bytes(value).decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInputError(f"input '{name}' is a text input; element {i} is not "
                                        "UTF-8") from None
        elif isinstance(value, str):
            texts.append(str(value))
        else:
            raise InvalidInputError(f"input '{name}' is a text input; element {i} is a "
                                    f"{type(value).__name__}, not a string")
    return object_array(texts, array.shape)


def bytes_elements(array: np.ndarray) -> list[bytes]:
    """Each element of a string or bytes tensor as bytes (str as UTF-8), row-major."""
    out = []
    for value in array.reshape(-1):
        if isinstance(value, (bytes, np.bytes_)):
            out.append(bytes(value))
        elif isinstance(value, str):
            out.append(value.encode("utf-8"))
        else:  # a number in an object array: its text, as Triton writes a BYTES output
            out.append(str(value).encode("utf-8"))
    return out


def text_elements(name: str, array: np.ndarray) -> list[str]:
    """Each element as text for a JSON body; bytes that are not UTF-8 cannot be JSON."""
    try:
        return [b.decode("utf-8") for b in bytes_elements(array)]
    except UnicodeDecodeError:
        raise InvalidInputError(f"output '{name}' holds bytes that are not UTF-8 text, which "
                                "JSON cannot carry; ask for it as binary data (output "
                                'parameters {"binary_data": true})') from None
