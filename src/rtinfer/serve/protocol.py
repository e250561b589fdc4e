"""The Open Inference Protocol (KServe v2) on the wire: decode requests, encode responses.

Framework-free on purpose: the HTTP app, and later a Ray Serve deployment or a gRPC front end,
call :func:`decode_infer_request` and :func:`encode_infer_response` the same way.

Binary tensor extension: a request body is ``<JSON header><blob 1><blob 2>…`` with the JSON
length in the ``Inference-Header-Content-Length`` header; a tensor whose ``parameters`` carry
``binary_data_size`` takes its bytes from the next blob (raw little-endian, row-major; BYTES
elements are a 4-byte little-endian length then the bytes). Outputs are returned the same way
when the request asks with ``binary_data_output`` or an output's ``binary_data``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rtinfer.errors import InvalidInputError
from rtinfer.serve._json import dumps, loads
from rtinfer.spec import ModelSpec

if TYPE_CHECKING:
    from rtinfer.serve.raw import RawInputs

__all__ = ["DTYPE_OF", "ProtocolError", "decode_infer_request", "encode_infer_response"]

DTYPE_OF = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
_DATATYPE_OF = {np.dtype(v).name: k for k, v in DTYPE_OF.items()}


class ProtocolError(InvalidInputError):
    """A request that does not follow the protocol (malformed JSON, shapes, sizes)."""


def decode_infer_request(body: bytes, header_length: int | None, spec: ModelSpec,
                         raw: RawInputs | None = None
                         ) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
    """Parse one request: its JSON header, the inputs as arrays, and whether to reply binary.

    Every input is checked against ``spec`` here, before the request joins any batch, so one
    bad request fails alone. With ``raw`` (a kit's raw inputs), a request that sends exactly
    the raw input names is pre-processed into model inputs first.
    """
    json_len = len(body) if header_length is None else header_length
    if not 0 < json_len <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {json_len} is outside the body "
                            f"({len(body)} bytes)")
    try:
        request = loads(body[:json_len])
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError('request must be a JSON object with an "inputs" list')
    blobs = memoryview(body)[json_len:]
    offset = 0
    feeds: dict[str, np.ndarray] = {}
    for item in request["inputs"]:
        name, array, used = _decode_tensor(item, blobs[offset:])
        offset += used
        if name in feeds:
            raise ProtocolError(f"input '{name}' is given twice")
        feeds[name] = array
    if offset != len(blobs):
        raise ProtocolError(f"{len(blobs) - offset} bytes of binary data were not claimed by "
                            "any input's binary_data_size")
    if raw is not None and raw.matches(list(feeds)):
        feeds = raw.convert(feeds)
    feeds = spec.validate(feeds)
    params = request.get("parameters") or {}
    binary = bool(params.get("binary_data_output")) or any(
        (o.get("parameters") or {}).get("binary_data") for o in request.get("outputs") or [])
    return request, feeds, binary


def _decode_tensor(item: Any, blobs: memoryview) -> tuple[str, np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError('each input must be an object with a "name"')
    name = item["name"]
    datatype, shape = item.get("datatype"), item.get("shape")
    if datatype not in DTYPE_OF:
        raise ProtocolError(f"input '{name}' has datatype {datatype!r}; expected one of "
                            f"{sorted(DTYPE_OF)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}' needs a shape: a list of non-negative integers")
    count = math.prod(shape)  # 1 for a scalar's []
    size = (item.get("parameters") or {}).get("binary_data_size")
    used = 0
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(blobs):
            raise ProtocolError(f"input '{name}' claims binary_data_size {size!r} but only "
                                f"{len(blobs)} bytes remain")
        raw, used = bytes(blobs[:size]), size
        if datatype == "BYTES":
            flat = _split_bytes(raw, name)
        else:
            dtype = np.dtype(DTYPE_OF[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input '{name}': {size} bytes for shape {shape} of "
                                    f"{datatype} ({count * dtype.itemsize} expected)")
            flat = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    else:
        data = item.get("data")
        if data is None:
            raise ProtocolError(f"input '{name}' has neither data nor binary_data_size")
        if datatype == "BYTES":
            items = np.ravel(np.array(data, dtype=object))
            if not all(isinstance(d, str) for d in items):
                raise ProtocolError(f"input '{name}': BYTES data in JSON must be strings")
            flat = np.array([d.encode() for d in items], dtype=object)
        else:
            try:
                flat = np.asarray(data, dtype=DTYPE_OF[datatype]).ravel()
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"input '{name}': data is not {datatype}: {exc}") from None
    if flat.size != count:
        raise ProtocolError(f"input '{name}' has {flat.size} elements but shape {shape} needs "
                            f"{count}")
    return name, flat.reshape(shape), used


def _split_bytes(raw: bytes, name: str) -> np.ndarray:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ProtocolError(f"input '{name}': truncated BYTES length prefix")
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return np.array(out, dtype=object)


def encode_infer_response(model: str, version: str, request: Mapping[str, Any],
                          outputs: Mapping[str, np.ndarray], binary: bool
                          ) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    wanted = [o["name"] for o in request.get("outputs") or []] or list(outputs)
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise ProtocolError(f"unknown output(s) {missing}; the model has {list(outputs)}")
    tensors, blobs = [], []
    for name in wanted:
        array = outputs[name]
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape),
                                 "datatype": _DATATYPE_OF.get(array.dtype.name, "BYTES")}
        if binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel()  # written as a flat list by dumps
        tensors.append(entry)
    response = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.get("id") is not None:
        response["id"] = request["id"]
    header = dumps(response)
    if not binary:
        return header, None
    return header + b"".join(blobs), len(header)
