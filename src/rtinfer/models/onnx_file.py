"""Import an ONNX file: check it with the ONNX checker and read its spec and opsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtinfer._deps import require
from rtinfer._hashing import sha256_file
from rtinfer._paths import relative_inside
from rtinfer.errors import ModelLoadError, UnsafePathError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.spec import ModelSpec

__all__ = ["load_onnx"]


def load_onnx(path: str | Path, *, source: Source | None = None) -> ImportedModel:
    """Load and validate ``path``; a corrupt or invalid file raises :class:`ModelLoadError`."""
    onnx = require("onnx", "Reading ONNX models")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no ONNX file at '{path}'; check the path")
    try:
        # Load without external data first: the checker below reads large weights by path.
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends; all mean "not ONNX"
        raise ModelLoadError(
            f"'{path}' is not a readable ONNX model ({type(exc).__name__}: {exc}); the file may "
            "be truncated or not an ONNX protobuf: re-export or re-download it"
        ) from exc
    for location in _external_locations(proto.graph):
        # ONNX Runtime and the checker open these relative to the model file: a reference
        # such as ../../etc/passwd would read outside the model's folder.
        try:
            relative_inside(path.parent, location, "external data file")
        except UnsafePathError as exc:
            raise ModelLoadError(f"'{path}' names external data outside its folder: {exc}; "
                                 "keep external data files beside the model") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(
            f"'{path}' parsed as an empty ONNX model (no nodes, no outputs); the file is probably "
            "not an ONNX model: re-export it"
        )
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(
            f"'{path}' fails the ONNX checker: {first}. Re-export the model with a supported "
            "opset, or fix the graph with onnx tools"
        ) from exc
    opset = {(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import}
    return ImportedModel(
        path=path.resolve(),
        spec=ModelSpec.from_onnx(proto),
        source=source or Source("onnx", str(path), sha256_file(path)),
        opset=opset,
    )


def _external_locations(graph: Any) -> list[str]:
    """The ``location`` of every tensor stored outside the file, subgraphs included."""
    tensors = [*graph.initializer, *(s.values for s in graph.sparse_initializer)]
    found: list[str] = []
    for node in graph.node:
        for attr in node.attribute:
            tensors.extend([attr.t, *attr.tensors] if attr.HasField("t") else attr.tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found.extend(_external_locations(sub))
    for tensor in tensors:
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            found.extend(e.value for e in tensor.external_data if e.key == "location")
    return found
