"""Triton's ``config.pbtxt``: the one reader (:func:`parse`) and the one writer
(:func:`triton_config`).

The reader turns the protobuf text format into plain dicts:

    parse('max_batch_size: 8 dynamic_batching { preferred_batch_size: [4, 8] }')
    -> {"max_batch_size": [8], "dynamic_batching": [{"preferred_batch_size": [4, 8]}]}

Every field maps to a list of its values, because the text format writes a repeated field
either as ``f: [a, b]`` or as ``f: a f: b`` and a reader without the schema cannot tell a
repeated field from a single one. :func:`first` reads a single field. Only what a model config
uses is understood: scalars (numbers, quoted strings, enum names), messages and lists; ``#``
comments are skipped. Anything else raises :class:`ConfigError` naming the position.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from rtinfer.errors import ArtifactError, ConfigError
from rtinfer.spec import ModelSpec, TensorSpec, datatype_of_dtype, triton_type

__all__ = ["first", "parse", "triton_config"]

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
                    r'|[{}\[\]:,;<>]|[^\s{}\[\]:,;<>"\']+|.')


def parse(text: str) -> dict[str, list[Any]]:
    """The message in ``text`` as ``{field: [values]}`` (nested messages are dicts too)."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    message, _ = _message(tokens, 0, closing=None)
    return message


def first(message: dict[str, list[Any]], field: str, default: Any = None) -> Any:
    """The first value of ``field``, or ``default`` when the field is absent."""
    values = message.get(field)
    return values[0] if values else default


def _message(tokens: list[str], i: int, closing: str | None) -> tuple[dict[str, list[Any]], int]:
    out: dict[str, list[Any]] = {}
    while i < len(tokens):
        tok = tokens[i]
        if tok == closing:
            return out, i + 1
        if tok in (",", ";"):
            i += 1
            continue
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", tok):
            raise ConfigError(f"config.pbtxt: expected a field name, found {tok!r} "
                              f"(token {i + 1})")
        i += 1
        if i < len(tokens) and tokens[i] == ":":
            i += 1
        if i >= len(tokens):
            raise ConfigError(f"config.pbtxt: field '{tok}' has no value")
        values, i = _value(tokens, i)
        out.setdefault(tok, []).extend(values)
    if closing is not None:
        raise ConfigError(f"config.pbtxt: a message is not closed with '{closing}'")
    return out, i


def _value(tokens: list[str], i: int) -> tuple[list[Any], int]:
    tok = tokens[i]
    if tok in ("{", "<"):
        msg, i = _message(tokens, i + 1, closing="}" if tok == "{" else ">")
        return [msg], i
    if tok == "[":
        values: list[Any] = []
        i += 1
        while i < len(tokens) and tokens[i] != "]":
            if tokens[i] == ",":
                i += 1
                continue
            more, i = _value(tokens, i)
            values.extend(more)
        if i >= len(tokens):
            raise ConfigError("config.pbtxt: a list is not closed with ']'")
        return values, i + 1
    return [_scalar(tok)], i + 1


def _scalar(tok: str) -> Any:
    if tok[0] in "\"'":
        if len(tok) < 2 or tok[-1] != tok[0]:
            raise ConfigError(f"config.pbtxt: a string is not closed: {tok!r}")
        return tok[1:-1].encode().decode("unicode_escape")
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(tok)
    return {"true": True, "false": False}.get(tok, tok)


def triton_config(
    name: str,
    spec: ModelSpec,
    *,
    max_batch_size: int = 32,
    threads: int | None = None,
    instances: int = 1,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 0,
    model_filename: str | None = None,
) -> str:
    """A ``config.pbtxt`` for Triton's ``onnxruntime_onnx`` platform; for a ``.tflite``
    ``model_filename``, ``backend: "litert"`` (rtinfer's: Triton has no LiteRT backend of its
    own). The engine still comes from each version (a ``.tflite`` runs on LiteRT, an ONNX
    version of the same model on its own engine).

    When every input and output has a leading batch dimension, the model batches: Triton's
    ``max_batch_size`` is set and the batch axis is left out of ``dims``. Otherwise
    ``max_batch_size: 0`` and full shapes. Threads go to the ORT backend's own
    ``intra_op_thread_count`` parameter.
    """
    batching = max_batch_size > 0 and all(
        t.shape and not isinstance(t.shape[0], int) for t in (*spec.inputs, *spec.outputs)
    )
    tflite = model_filename is not None and model_filename.endswith(".tflite")
    lines = [f'name: "{name}"', 'backend: "litert"' if tflite else 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {max_batch_size if batching else 0}"]
    for kind, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        for t in tensors:
            lines.append(_triton_tensor(kind, t, batching))
    lines.append(f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]")
    if batching and dynamic_batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}")
    if threads:
        for key, value in (("intra_op_thread_count", threads), ("inter_op_thread_count", 1)):
            lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def _triton_tensor(kind: str, t: TensorSpec, batching: bool) -> str:
    shape = t.shape[1:] if batching else t.shape
    dims = [d if isinstance(d, int) else -1 for d in shape]
    reshape = ""
    if not dims:  # Triton needs at least one dim; [1] reshaped to [] is its idiom for scalars
        dims, reshape = [1], " reshape: { shape: [ ] }"
    datatype = datatype_of_dtype(t.dtype)
    if datatype is None:
        raise ArtifactError(f"{kind} '{t.name}' has dtype {t.dtype}, which Triton cannot carry")
    return (f'{kind} [ {{ name: "{t.name}" data_type: {triton_type(datatype)} '
            f'dims: [ {", ".join(map(str, dims))} ]{reshape} }} ]')
