"""Import an ONNX file: check it with the ONNX checker and read its spec and opsets."""

from __future__ import annotations

from pathlib import Path

from rtinfer._deps import require
from rtinfer._hashing import sha256_file
from rtinfer.errors import ModelLoadError
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
