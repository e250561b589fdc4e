"""What a model takes and gives: named, typed tensors whose dimensions may be symbolic.

A dimension is an ``int`` (fixed), a ``str`` (symbolic: every input that names ``"batch"`` must
agree on its size within one call) or ``None`` (free). MiniLM's spec reads::

    inputs:  input_ids      int64  (batch, sequence)
             attention_mask int64  (batch, sequence)
             token_type_ids int64  (batch, sequence)
    outputs: last_hidden_state float32 (batch, sequence, 384)

:meth:`ModelSpec.validate` is the one gate every engine's inputs pass through, so a wrong name,
dtype, rank or size fails the same way whichever engine runs the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rtinfer.errors import InvalidInputError

if TYPE_CHECKING:
    import onnx

__all__ = ["Dim", "ModelSpec", "TensorSpec"]

Dim = int | str | None

# numpy dtype name <-> Open Inference Protocol (KServe v2) datatype
_KSERVE_DATATYPE = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}


#: The tensor datatypes of the KServe v2 / Triton protocols and the numpy dtype each carries:
#: the one table the wire protocol, the gRPC model config and ``config.pbtxt`` read.
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
_DATATYPE_OF_DTYPE = {np.dtype(v).name: k for k, v in DATATYPES.items()}


def datatype_of_dtype(dtype: str) -> str | None:
    """The protocol datatype of a numpy dtype name (``float32`` -> ``FP32``); None if none."""
    return _DATATYPE_OF_DTYPE.get(dtype)


def triton_type(datatype: str) -> str:
    """Triton's model-config enum for a protocol datatype (``BYTES`` is ``TYPE_STRING``)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _format_shape(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: ``TensorSpec("x", "float32", ("batch", 3, 224, 224))``."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"TensorSpec.name must be a non-empty str, got {self.name!r}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        object.__setattr__(self, "shape", tuple(self.shape))
        for d in self.shape:
            if not (d is None or isinstance(d, str) or (isinstance(d, int) and d >= 0)):
                raise TypeError(
                    f"dimension {d!r} of '{self.name}' must be an int >= 0, a symbol name "
                    "(str) or None"
                )

    @property
    def kserve_datatype(self) -> str:
        """The datatype name of the Open Inference Protocol (``"FP32"``, ``"INT64"``, …)."""
        return _KSERVE_DATATYPE.get(self.dtype, self.dtype.upper())

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def concrete_shape(self, dims: Mapping[str, int], default: int = 1) -> tuple[int, ...]:
        """Fill symbolic and free dimensions: ``dims`` by symbol name, else ``default``."""
        out = []
        for d in self.shape:
            if isinstance(d, int):
                out.append(d)
            elif isinstance(d, str):
                out.append(int(dims.get(d, default)))
            else:
                out.append(default)
        return tuple(out)

    def describe(self) -> str:
        return f"{self.name} {self.dtype} {_format_shape(self.shape)}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["shape"]))


@dataclass(frozen=True)
class ModelSpec:
    """The inputs and outputs of a model, in the order the model declares them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    _by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    # Each input's numpy dtype, made once: building one from its name costs a parse, and
    # every request is checked against them.
    _dtypes: dict[str, np.dtype[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "_by_name", {t.name: t for t in self.inputs})
        object.__setattr__(self, "_dtypes", {t.name: np.dtype(t.dtype) for t in self.inputs})

    @property
    def input_dtypes(self) -> dict[str, np.dtype[Any]]:
        """Each input's numpy dtype by name (the spec's own dict: do not change it)."""
        return self._dtypes

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidInputError(
                f"model has no input named '{name}'; its inputs are {self.input_names}"
            ) from None

    def validate(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names, dtypes, ranks and sizes; return the feeds in the model's input order.

        Nothing is cast: an int32 array for an int64 input is an error, because a silent cast
        hides a client bug and costs a copy on every call.
        """
        if not isinstance(feeds, Mapping):
            raise TypeError(
                f"inputs must be a dict of input name -> numpy array, got {type(feeds).__name__}; "
                f"this model's inputs are {self.input_names}"
            )
        if len(feeds) != len(self._by_name) or not all(k in self._by_name for k in feeds):
            unknown = [k for k in feeds if k not in self._by_name]
            if unknown:
                raise InvalidInputError(
                    f"unknown input name(s) {unknown}; this model's inputs are "
                    f"{self.input_names}"
                )
            missing = [n for n in self.input_names if n not in feeds]
            raise InvalidInputError(
                f"missing input(s) {missing}; this model needs "
                + ", ".join(t.describe() for t in self.inputs)
            )
        seen: dict[str, tuple[int, str]] = {}  # symbol -> (size, input that fixed it)
        ordered: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            value = feeds[spec.name]
            if not isinstance(value, np.ndarray):
                raise TypeError(
                    f"input '{spec.name}' must be a numpy array, got {type(value).__name__}; "
                    f"convert it with np.asarray(value, dtype=np.{spec.dtype})"
                )
            self._check_one(spec, self._dtypes[spec.name], value, seen)
            ordered[spec.name] = value
        return ordered

    @staticmethod
    def _check_one(spec: TensorSpec, dtype: np.dtype[Any], value: np.ndarray,
                   seen: dict[str, tuple[int, str]]) -> None:
        if value.dtype != dtype and value.dtype.name != spec.dtype and not (
            dtype.kind == "O" and value.dtype.kind in "OUS"
        ):  # (by name: a byte-swapped float32 is still float32, as it always was here)
            raise InvalidInputError(
                f"input '{spec.name}' has dtype {value.dtype.name}, expected {spec.dtype}; "
                f"cast it with x.astype(np.{spec.dtype})"
            )
        if value.ndim != len(spec.shape):
            raise InvalidInputError(
                f"input '{spec.name}' has shape {tuple(value.shape)} (rank {value.ndim}), "
                f"expected rank {len(spec.shape)}: {_format_shape(spec.shape)}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise InvalidInputError(
                    f"input '{spec.name}' has size {got} on axis {axis}, expected {want} "
                    f"(shape {tuple(value.shape)} vs {_format_shape(spec.shape)})"
                )
            if isinstance(want, str):
                if want in seen and seen[want][0] != got:
                    size, other = seen[want]
                    raise InvalidInputError(
                        f"input '{spec.name}' has {want}={got} on axis {axis}, but input "
                        f"'{other}' has {want}={size}; inputs sharing a dimension must agree"
                    )
                seen.setdefault(want, (got, spec.name))

    def example_inputs(
        self, batch: int = 1, dims: Mapping[str, int] | None = None, seed: int = 0,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Synthetic feeds of the right names, dtypes and shapes, e.g. for warm-up and timing.

        Symbolic dimensions take ``dims[symbol]`` (``batch`` takes ``batch``, as does the
        leading axis of every input when :meth:`batch_axis` finds it), other free ones 1;
        ``shapes`` gives inputs their whole shape (``{"x": (1, 3, 48, 320)}``, as benchmark
        tools take it; checked by :meth:`check_shapes`): its symbolic dimensions size every
        input that shares them, and an axis named ``batch`` still takes ``batch``.
        Floats are standard normal; integers are 0 or 1 (valid indices for any embedding table)
        except inputs named ``*mask*``, which are all ones so no position is masked out.
        Runtimes do not care about values for timing; accuracy needs real data.
        """
        rng = np.random.default_rng(seed)
        given = self.check_shapes(shapes or {}, dims)
        fixed = {**self._symbols(given), **(dims or {})}
        sizes = {**fixed, "batch": batch}
        batched, symbol = self.batch_axis()  # the leading axis, whatever its name
        if batched and symbol is not None:
            sizes.setdefault(symbol, batch)
        feeds: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = t.concrete_shape(sizes, default=1)
            if batched and t.name not in given and t.shape[0] is None:  # unnamed: the batch
                shape = (batch, *shape[1:])
            if t.name in given:  # unnamed free dimensions as given; symbols as sized above
                shape = tuple(s if isinstance(d, str) else g
                              for d, s, g in zip(t.shape, shape, given[t.name], strict=True))
            kind = np.dtype(t.dtype).kind
            if kind == "f":
                feeds[t.name] = rng.standard_normal(shape).astype(t.dtype)
            elif kind in "iu":
                value = (np.ones(shape) if "mask" in t.name.lower()
                         else rng.integers(0, 2, size=shape))
                feeds[t.name] = value.astype(t.dtype)
            elif kind == "b":
                feeds[t.name] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                feeds[t.name] = np.full(shape, "text", dtype=object)
        return feeds

    def batch_axis(self) -> tuple[bool, str | None]:
        """Whether axis 0 of every input is the batch, and its symbol (None: unnamed). It is
        when every input's leading axis is free, under one name at most (``batch``, ``N``,
        ``batch_size`` or none), and that name sizes no other axis: a sequence-first
        ``(seq, batch, d)`` input, or ``(N, N)``, is not batched on axis 0."""
        if not self.inputs or any(not t.shape or isinstance(t.shape[0], int)
                                  for t in self.inputs):
            return False, None
        leads = {t.shape[0] for t in self.inputs if isinstance(t.shape[0], str)}
        rest = {d for t in self.inputs for d in t.shape[1:] if isinstance(d, str)}
        if len(leads) > 1 or leads & rest or "batch" in rest:
            return False, None
        return True, next(iter(leads), None)

    def check_shapes(self, shapes: Mapping[str, Sequence[int]],
                     dims: Mapping[str, int] | None = None) -> dict[str, tuple[int, ...]]:
        """``shapes`` checked against the inputs: known names, the rank, every fixed
        dimension as the model has it, and one size per symbol (across the shapes given and
        ``dims``); an error names the input and the dimension."""
        out = {}
        by_name = {t.name: t for t in self.inputs}
        for name, shape in shapes.items():
            t = by_name.get(name)
            if t is None:
                raise InvalidInputError(f"--shape names '{name}', which is not an input; the "
                                        f"inputs are {list(by_name)}")
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(t.shape) or min(shape, default=1) < 1:
                raise InvalidInputError(f"--shape {name}: {len(shape)} positive dimensions "
                                        f"given, the input has {len(t.shape)}: "
                                        f"{_format_shape(t.shape)}")
            for axis, (want, got) in enumerate(zip(t.shape, shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise InvalidInputError(f"--shape {name}: axis {axis} is fixed at {want} "
                                            f"in the model, got {got}")
            out[name] = shape
        self._symbols(out, dims)  # raises on two sizes for one symbol
        return out

    def _symbols(self, shapes: Mapping[str, tuple[int, ...]],
                 dims: Mapping[str, int] | None = None) -> dict[str, int]:
        """The size each symbolic dimension takes in ``shapes`` (``batch`` excepted)."""
        seen: dict[str, tuple[int, str]] = {k: (v, "--dim") for k, v in (dims or {}).items()}
        by_name = {t.name: t for t in self.inputs}
        for name, shape in shapes.items():
            for d, size in zip(by_name[name].shape, shape, strict=True):
                if not isinstance(d, str) or d == "batch":
                    continue
                if d in seen and seen[d][0] != size:
                    raise InvalidInputError(f"--shape {name}: dimension '{d}' is {size} here "
                                            f"but {seen[d][0]} in {seen[d][1]}; inputs that "
                                            "share a dimension need one size for it")
                seen.setdefault(d, (size, f"--shape {name}"))
        return {k: v for k, (v, _) in seen.items()}

    def describe(self) -> str:
        lines = ["inputs:"] + ["  " + t.describe() for t in self.inputs]
        lines += ["outputs:"] + ["  " + t.describe() for t in self.outputs]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> ModelSpec:
        """Read the spec from an ONNX graph's declared inputs and outputs.

        Initializers that are also listed as graph inputs (old exporters did this) are not
        inputs a caller must feed, so they are left out.
        """
        initializers = {i.name for i in model.graph.initializer}
        return cls(
            tuple(_onnx_tensor(v) for v in model.graph.input if v.name not in initializers),
            tuple(_onnx_tensor(v) for v in model.graph.output),
        )


def _onnx_tensor(value_info: Any) -> TensorSpec:
    from onnx import helper

    ttype = value_info.type
    if not ttype.HasField("tensor_type"):
        kind = ttype.WhichOneof("value")
        raise InvalidInputError(
            f"'{value_info.name}' is an ONNX {kind}, not a tensor; rtinfer handles tensor inputs "
            "and outputs only (for scikit-learn classifiers, convert with zipmap disabled)"
        )
    elem = ttype.tensor_type.elem_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
    shape: list[Dim] = []
    if ttype.tensor_type.HasField("shape"):
        for i, d in enumerate(ttype.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.dim_param:
                shape.append(d.dim_param)
            else:
                shape.append(None if i else "batch")
    return TensorSpec(value_info.name, dtype, tuple(shape))
