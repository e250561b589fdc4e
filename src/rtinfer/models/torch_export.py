"""Export a PyTorch module to ONNX with dynamic axes, and accept it only if its outputs match.

    model = from_torch(net, {"x": torch.randn(1, 3, 32, 32)})
    # inputs:  x float32 (batch, 3, 32, 32)   — axis 0 of every input is dynamic by default
    model = from_torch(bert, enc, dynamic_axes={n: {1: "sequence"} for n in enc})

The export runs the exporter of ``torch.onnx`` (the torch.export-based one), then runs the ONNX
file on ONNX Runtime with the same example inputs and compares every output with PyTorch's:
``|onnx - torch| <= atol + rtol * |torch|`` elementwise (defaults 1e-4 and 1e-3). A mismatch
raises :class:`ExportMismatchError` naming the output and the size of the difference.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer.errors import ExportError, ExportMismatchError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.models.onnx_file import load_onnx

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "compare_outputs", "from_torch", "state_hash"]

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

DynamicAxes = Mapping[str, Mapping[int, str]]


def from_torch(
    module: Any,
    example_inputs: Any,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
    out_dir: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    source: Source | None = None,
) -> ImportedModel:
    """Export ``module`` to ONNX and verify it against PyTorch on ``example_inputs``.

    ``example_inputs`` is a dict of name -> tensor (passed as keyword arguments), a tuple of
    tensors (positional; named ``input_0``… unless ``input_names`` is given) or one tensor.
    Axis 0 of every input is the dynamic ``batch`` axis; ``dynamic_axes`` adds more, e.g.
    ``{"input_ids": {1: "sequence"}}``. The ONNX file goes to ``out_dir`` (default: a
    temporary folder that lives as long as the returned model).
    """
    torch = require("torch", "Importing PyTorch models")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    module.eval()
    names, tensors, as_kwargs = _normalise_inputs(torch, example_inputs, input_names)
    axes = _dynamic_axes(names, tensors, dynamic_axes)
    with torch.no_grad():
        flat = _flatten_outputs(module(**dict(zip(names, tensors, strict=True)))
                                if as_kwargs else module(*tensors), "output")
    reference = [array for _, array in flat]
    out_names = list(output_names) if output_names else [name for name, _ in flat]
    if len(out_names) != len(reference):
        raise ValueError(
            f"output_names has {len(out_names)} names but the module returns "
            f"{len(reference)} tensors"
        )

    owned = out_dir is None
    out_dir = Path(tempfile.mkdtemp(prefix="rtinfer-export-")) if out_dir is None else out_dir
    path = Path(out_dir) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _export(torch, module, names, tensors, as_kwargs, axes, out_names, path)
        model = load_onnx(path, source=source or Source("torch", _describe(module),
                                                        state_hash(module)))
    except BaseException:
        if owned:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if owned:
        model.own_folder(Path(out_dir))
    model.torch_module = module
    model.torch_kwargs = as_kwargs
    feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)}
    model.export_check = verify_export(model, feeds, dict(zip(out_names, reference, strict=True)),
                                       atol=atol, rtol=rtol)
    return model


def verify_export(
    model: ImportedModel,
    feeds: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    """Run the ONNX file on ONNX Runtime and compare with ``reference``; raise on mismatch."""
    ort = require("onnxruntime", "Verifying an ONNX export")
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, dict(feeds)), strict=True))
    report = compare_outputs(got, reference, atol=atol, rtol=rtol)
    for name, row in report["outputs"].items():
        if not row["within_tolerance"]:
            raise ExportMismatchError(
                f"ONNX export of {model.source.description} does not match the source model: "
                f"output '{name}' differs by up to {row['max_abs_diff']:.3g} (worst element "
                f"{row['worst_index']}), beyond atol={atol:g} + rtol={rtol:g}*|reference|. "
                "Check for ops that behave differently when traced (data-dependent control "
                "flow, in-place updates, dropout left on), or pass a looser atol/rtol if this "
                "difference is acceptable"
            )
    return report


def compare_outputs(
    got: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    """Per-output max abs diff and whether ``|got-ref| <= atol + rtol*|ref|`` holds everywhere."""
    rows: dict[str, Any] = {}
    for name, ref in reference.items():
        if name not in got:
            raise ExportMismatchError(
                f"output '{name}' of the source model is missing from the export; "
                f"the export has outputs {sorted(got)}"
            )
        a, b = np.asarray(got[name]), np.asarray(ref)
        if a.shape != b.shape:
            raise ExportMismatchError(
                f"output '{name}' has shape {a.shape} in the export but {b.shape} in the source"
            )
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            bound = atol + rtol * np.abs(b.astype(np.float64))
            worst = np.unravel_index(int(np.argmax(diff - bound)), diff.shape) if diff.size else ()
            ok = bool(np.all(diff <= bound))
            max_diff = float(diff.max()) if diff.size else 0.0
        else:
            mismatch = a != b
            worst = np.unravel_index(int(np.argmax(mismatch)), a.shape) if a.size else ()
            ok = not bool(mismatch.any())
            max_diff = float(mismatch.sum())
        rows[name] = {
            "max_abs_diff": max_diff,
            "worst_index": tuple(int(i) for i in worst),
            "within_tolerance": ok,
        }
    return {"atol": atol, "rtol": rtol, "outputs": rows}


def state_hash(module: Any) -> str:
    """sha256 over a module's parameters and buffers, names included, in a stable order."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _normalise_inputs(
    torch: Any, example_inputs: Any, input_names: Sequence[str] | None
) -> tuple[list[str], list[Any], bool]:
    def as_tensor(value: Any, name: str) -> Any:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        raise TypeError(
            f"example input '{name}' must be a torch.Tensor or numpy array, "
            f"got {type(value).__name__}"
        )

    if isinstance(example_inputs, Mapping):
        names = [str(k) for k in example_inputs]
        return names, [as_tensor(v, n) for n, v in example_inputs.items()], True
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError(
            "example_inputs must be a dict of name -> tensor, a tuple of tensors or a tensor, "
            f"got {type(example_inputs).__name__}"
        )
    names = list(input_names) if input_names else [f"input_{i}" for i in
                                                   range(len(example_inputs))]
    if len(names) != len(example_inputs):
        raise ValueError(
            f"input_names has {len(names)} names for {len(example_inputs)} example inputs"
        )
    return names, [as_tensor(v, n) for n, v in zip(names, example_inputs, strict=True)], False


def _dynamic_axes(
    names: list[str], tensors: list[Any], extra: DynamicAxes | None
) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {n: ({0: "batch"} if t.dim() else {})
                                       for n, t in zip(names, tensors, strict=True)}
    for name, mapping in (extra or {}).items():
        if name not in axes:
            raise ValueError(f"dynamic_axes names unknown input '{name}'; inputs are {names}")
        for axis, symbol in mapping.items():
            rank = tensors[names.index(name)].dim()
            if not 0 <= axis < rank:
                raise ValueError(f"dynamic axis {axis} of '{name}' is outside its rank {rank}")
            axes[name][int(axis)] = str(symbol)
    return axes


def _export(
    torch: Any,
    module: Any,
    names: list[str],
    tensors: list[Any],
    as_kwargs: bool,
    axes: dict[str, dict[int, str]],
    out_names: list[str],
    path: Path,
) -> None:
    require("onnxscript", "Exporting PyTorch models to ONNX")
    dims = {s: torch.export.Dim(s) for m in axes.values() for s in m.values()}
    # torch.export specialises a dimension whose example size is 0 or 1 to a constant, so trace
    # with every dynamic axis at least 2 long (the verification below uses the user's inputs).
    traced = []
    for name, t in zip(names, tensors, strict=True):
        for axis in axes[name]:
            if t.shape[axis] < 2:
                t = torch.cat([t, t], dim=axis) if t.shape[axis] == 1 else t
        traced.append(t)
    shapes = [{a: dims[s] for a, s in axes[n].items()} or None for n in names]
    kwargs: dict[str, Any] = dict(
        dynamo=True, optimize=True, verbose=False,
        input_names=names, output_names=out_names,
    )
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's progress chatter is not for users
            if as_kwargs:
                program = torch.onnx.export(
                    module, (), kwargs=dict(zip(names, traced, strict=True)),
                    dynamic_shapes=dict(zip(names, shapes, strict=True)), **kwargs)
            else:
                program = torch.onnx.export(module, tuple(traced), dynamic_shapes=tuple(shapes),
                                            **kwargs)
            program.save(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"torch.onnx.export failed for {_describe(module)}: {first}. Make the forward pass "
            "traceable (no data-dependent Python control flow), or fix the dynamic axes "
            f"{axes}"
        ) from exc


def _flatten_outputs(output: Any, name: str) -> list[tuple[str, np.ndarray]]:
    """Name every output tensor: dict keys (as transformers' ModelOutput has), else output_<i>."""
    torch = require("torch", "Importing PyTorch models")
    if isinstance(output, torch.Tensor):
        return [(name, output.detach().cpu().numpy())]
    if isinstance(output, Mapping):
        return [row for key, x in output.items() for row in _flatten_outputs(x, str(key))]
    if isinstance(output, (tuple, list)):
        if len(output) == 1:
            return _flatten_outputs(output[0], name)
        return [row for i, x in enumerate(output) for row in _flatten_outputs(x, f"{name}_{i}")]
    raise ExportError(
        f"the module returned a {type(output).__name__}; rtinfer exports modules whose "
        "outputs are tensors, or tuples/dicts of tensors"
    )


def _describe(module: Any) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"torch {type(module).__name__} ({n:,} parameters)"
