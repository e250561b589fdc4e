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
from rtinfer.serve.tensors import (
    as_text,
    bytes_elements,
    from_json,
    object_array,
    text_elements,
)
from rtinfer.spec import DATATYPES, ModelSpec, datatype_of_dtype

if TYPE_CHECKING:
    from rtinfer.serve.raw import RawInputs

__all__ = ["DECODE_INLINE_BYTES", "EXTENSIONS", "ProtocolError", "check_outputs",
           "datatype_of", "decode_infer_request", "decode_tensor", "encode_infer_response",
           "header_length", "prepare_feeds", "wire_tensor"]



#: What this server speaks beyond the required API (``GET /v2``, gRPC ServerMetadata).
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]
#: Requests up to this size are decoded on the event loop; bigger ones in a worker thread, so
#: one large body does not hold up every other request (HTTP and gRPC alike).
DECODE_INLINE_BYTES = 64 << 10
#: Most dimensions a tensor may have (numpy's own limit is 64; no model here takes more).
MAX_RANK = 32
# Each datatype's numpy dtype and back, made once (np.dtype(...) and .name cost a parse).
_DTYPES = {k: np.dtype(v) for k, v in DATATYPES.items()}
_DATATYPE_OF = {v: k for k, v in _DTYPES.items() if k != "BYTES"}


class ProtocolError(InvalidInputError):
    """A request that does not follow the protocol (malformed JSON, shapes, sizes)."""


def header_length(value: str | None) -> int | None:
    """``Inference-Header-Content-Length`` as a number, or None when absent; anything but
    ASCII digits is a ProtocolError (``int()`` would take "٣" and fail on "²")."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ProtocolError(f"Inference-Header-Content-Length must be a byte count (ASCII "
                            f"digits), got {value[:40]!r}")
    return int(text)


def decode_infer_request(body: bytes, header_length: int | None, spec: ModelSpec,
                         raw: RawInputs | None = None
                         ) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
    """Parse one request: its JSON header, the inputs as arrays, and whether to reply binary.

    Every input is checked against ``spec`` here, before the request joins any batch, so one
    bad request fails alone. With ``raw`` (a kit's raw inputs), a request that sends exactly
    the raw input names is pre-processed into model inputs first. Every field of the wrong
    JSON type, and every requested output the model does not have, is a ProtocolError.
    """
    json_len = len(body) if header_length is None else header_length
    if not 0 < json_len <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {json_len} is outside the body "
                            f"({len(body)} bytes)")
    try:
        request = loads(body[:json_len])
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ProtocolError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError('request must be a JSON object with an "inputs" list')
    if request.get("id") is not None and not isinstance(request["id"], str):
        raise ProtocolError(f'"id" must be a string, got {_json_type(request["id"])}')
    params = _parameters(request, "the request")
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise ProtocolError(f'"outputs" must be a list of {{"name": ...}} objects, got '
                                f"{_json_type(outputs)}")
        names = []
        for entry in outputs:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ProtocolError('each entry of "outputs" must be an object with a '
                                    '"name" string')
            _parameters(entry, f"output '{entry['name']}'")
            names.append(entry["name"])
        check_outputs(names, spec)
    blobs = memoryview(body)[json_len:]
    offset = 0
    feeds: dict[str, np.ndarray] = {}
    dtypes = spec.input_dtypes
    for item in request["inputs"]:
        name, array, used = decode_tensor(item, blobs[offset:], dtypes)
        offset += used
        if name in feeds:
            raise ProtocolError(f"input '{name}' is given twice")
        feeds[name] = array
    if offset != len(blobs):
        raise ProtocolError(f"{len(blobs) - offset} bytes of binary data were not claimed by "
                            "any input's binary_data_size")
    feeds = prepare_feeds(feeds, spec, raw)
    binary = _flag(params, "binary_data_output") or any(
        _flag(o.get("parameters"), "binary_data") for o in outputs or [])
    return request, feeds, binary


def check_outputs(names: list[str], spec: ModelSpec) -> None:
    """Requested outputs must be distinct outputs of the model (checked before it runs)."""
    unknown = [n for n in names if n not in spec.output_names]
    if unknown or len(set(names)) != len(names):
        raise ProtocolError(f"requested outputs {names} must be distinct names of the "
                            f"model's outputs {spec.output_names}")


def prepare_feeds(feeds: dict[str, np.ndarray], spec: ModelSpec, raw: RawInputs | None
                  ) -> dict[str, np.ndarray]:
    """Decoded tensors -> the model's feeds, the same for every front end: a kit's raw inputs
    pre-processed, string inputs as UTF-8 text, then names, dtypes and shapes checked."""
    dtypes = spec.input_dtypes
    if raw is not None and raw.matches(list(feeds)):
        feeds = raw.convert(feeds)
    feeds = {k: as_text(k, v) if k in dtypes and dtypes[k].kind == "O" else v
             for k, v in feeds.items()}
    return spec.validate(feeds)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


def _parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    params = owner.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(f'"parameters" of {what} must be an object, got '
                            f"{_json_type(params)}")
    return params


def _flag(params: Any, key: str) -> bool:
    value = (params or {}).get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"parameter {key} must be true or false, got {_json_type(value)}")
    return value


def decode_tensor(item: Any, blobs: memoryview, dtypes: Mapping[str, np.dtype[Any]]
                  ) -> tuple[str, np.ndarray, int]:
    """One input of a request, in the JSON form (``data``, or ``binary_data_size`` bytes of
    ``blobs``), checked; its name, array and how many bytes of ``blobs`` it used. The gRPC
    front end passes its inputs in this form too."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError('each input must be an object with a "name" string')
    name = item["name"]
    datatype, shape = item.get("datatype"), item.get("shape")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ProtocolError(f"input '{name}' has datatype {datatype!r}; expected one of "
                            f"{sorted(DATATYPES)}")
    wanted, sent = dtypes.get(name), _DTYPES[datatype]
    if wanted is not None and sent != wanted:
        expected = datatype_of_dtype(wanted.name) or wanted.name
        raise ProtocolError(f"input '{name}' is {expected} for this model; the request sends "
                            f"{datatype}")
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}' needs a shape: a list of non-negative integers")
    if len(shape) > MAX_RANK:
        raise ProtocolError(f"input '{name}' has {len(shape)} dimensions; at most {MAX_RANK} "
                            "are accepted")
    count = math.prod(shape)  # 1 for a scalar's []
    if count == 0:
        raise ProtocolError(f"input '{name}' has shape {shape}, which holds no elements; send "
                            "at least one")
    size = _parameters(item, f"input '{name}'").get("binary_data_size")
    used = 0
    if size is not None:
        if item.get("data") is not None:
            raise ProtocolError(f"input '{name}' has both data and binary_data_size; send one")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(blobs):
            raise ProtocolError(f"input '{name}' claims binary_data_size {size!r} but only "
                                f"{len(blobs)} bytes remain")
        raw, used = bytes(blobs[:size]), size
        if datatype == "BYTES":
            flat = _split_bytes(raw, name)
        else:
            dtype = sent.newbyteorder("<")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"input '{name}': {size} bytes for shape {shape} of "
                                    f"{datatype} ({count * dtype.itemsize} expected)")
            flat = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    else:
        data = item.get("data")
        if data is None:
            raise ProtocolError(f"input '{name}' has neither data nor binary_data_size")
        if datatype == "BYTES":
            flat = _json_strings(name, data)
        else:
            flat = from_json(name, data, sent, datatype).ravel()
    if flat.size != count:
        raise ProtocolError(f"input '{name}' has {flat.size} elements but shape {shape} needs "
                            f"{count}")
    return name, flat.reshape(shape), used


def _json_strings(name: str, data: Any) -> np.ndarray:
    """BYTES elements of a request: strings (JSON) or bytes (gRPC's bytes_contents), flat or
    nested; kept as they are."""
    out: list[str | bytes] = []
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        elif isinstance(value, (str, bytes)):
            out.append(value)
        else:
            raise ProtocolError(f"input '{name}': BYTES data must be strings, got "
                                f"{_json_type(value)}")
    return object_array(out)


def datatype_of(array: np.ndarray) -> str:
    """The protocol's datatype of an output array; strings and bytes are BYTES."""
    known = _DATATYPE_OF.get(array.dtype)
    if known is not None:
        return known
    if array.dtype.kind in "OSU":
        return "BYTES"
    return datatype_of_dtype(array.dtype.name) or "BYTES"


def wire_tensor(array: np.ndarray) -> bytes:
    """An output's raw bytes: little-endian, row-major; BYTES as 4-byte little-endian lengths
    and the bytes (str as UTF-8), never an object array's memory."""
    if array.dtype.kind in "OSU":
        return b"".join(struct.pack("<I", len(e)) + e for e in bytes_elements(array))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _split_bytes(raw: bytes, name: str) -> np.ndarray:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ProtocolError(f"input '{name}': truncated BYTES length prefix")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise ProtocolError(f"input '{name}': a BYTES element claims {n} bytes but only "
                                f"{len(raw) - i - 4} remain")
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return object_array(out)


def encode_infer_response(model: str, version: str, request: Mapping[str, Any],
                          outputs: Mapping[str, np.ndarray], binary: bool
                          ) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it.

    BYTES outputs go out as 4-byte little-endian lengths and the bytes (binary) or as strings
    (JSON), never as an object array's memory.
    """
    wanted = [o["name"] for o in request.get("outputs") or []] or list(outputs)
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise ProtocolError(f"unknown output(s) {missing}; the model has {list(outputs)}")
    tensors, blobs = [], []
    for name in wanted:
        array = outputs[name]
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            blob = wire_tensor(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = text_elements(name, array) if datatype == "BYTES" else array.ravel()
        tensors.append(entry)
    response = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.get("id") is not None:
        response["id"] = request["id"]
    header = dumps(response)
    if not binary:
        return header, None
    return header + b"".join(blobs), len(header)
