"""Offline batch inference (``rtinfer predict MODEL INPUT OUTPUT [--ray]``).

    result = predict("repo/fraud/1", read_inputs("traffic.csv", spec))         # in-process
    result = predict("repo/fraud/1", rows, on_ray=True, concurrency=2)          # Ray Data
    write_predictions("scores.parquet", result)

The rows come from a ``.npz`` (arrays named after the model's inputs), a CSV or Parquet table
(columns named after the inputs, or, for a model with one 2-D input, every column but the id
column as its features, in file order), or a kit's split. Each row keeps its id (the ``id``
column, or ``--id-column``; else its row number) and the outputs are written beside it.

In-process, one session runs the rows ``batch_size`` at a time. On Ray (``on_ray=True``) the
rows are put in Ray's object store once and a Ray Data actor pool (``concurrency`` actors, one
model load each, ``threads`` CPUs each) runs ``map_batches`` over their row numbers; the
outputs come back in row order, so both ways write the same file. The input file is read by
the driver (it must fit in its memory); the model runs wherever Ray places the actors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer.errors import InvalidInputError, RtinferError

__all__ = ["Predictions", "predict", "read_inputs", "write_predictions"]


@dataclass
class Predictions:
    ids: np.ndarray
    outputs: dict[str, np.ndarray]
    seconds: float
    where: str  # "in-process" or "Ray Data, N actors"

    @property
    def rows_per_s(self) -> float:
        return len(self.ids) / self.seconds if self.seconds > 0 else float("inf")


def read_inputs(path: str | Path, spec: Any, id_column: str | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ids, model inputs) from a ``.npz``, CSV or Parquet file, for a model of ``spec``."""
    from rtinfer.tasks.data import read_table

    path = Path(path)
    if not path.is_file():
        raise RtinferError(f"no input file {path}")
    # The id stays as the file holds it: "007" stays "007", an int64 stays exact.
    ids = {id_column} if id_column else {"id"} - set(spec.input_names)
    return table_inputs(read_table(path, raw=ids), spec, id_column, str(path))


def table_inputs(table: Mapping[str, np.ndarray], spec: Any, id_column: str | None,
                 where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ids, model inputs) from a table's columns (see the module docstring)."""
    columns = dict(table)
    n = len(next(iter(columns.values()))) if columns else 0
    if id_column is not None and id_column not in columns:
        raise InvalidInputError(f"{where} has no id column '{id_column}'; its columns are "
                                f"{_names(columns)}")
    key = id_column or ("id" if "id" in columns and "id" not in spec.input_names else None)
    ids = columns.pop(key) if key is not None else np.arange(n)
    inputs = {t.name: _cast(columns.pop(t.name), t, where) for t in spec.inputs
              if t.name in columns}
    missing = [t for t in spec.inputs if t.name not in inputs]
    if len(missing) == 1 and len(missing[0].shape) == 2 and columns:
        features = missing[0]
        flat = [c for c in columns.values() if c.ndim == 1]
        if len(flat) != len(columns):
            raise InvalidInputError(f"{where}: the columns {_names(columns)} are not all "
                                    f"scalars; name an array after input '{features.name}'")
        width = features.shape[1]
        if isinstance(width, int) and width != len(flat):
            raise InvalidInputError(
                f"{where}: input '{features.name}' takes {width} features per row, the file "
                f"has {len(flat)} columns besides the id ({_names(columns)}); drop the "
                "others or name the id with --id-column")
        inputs[features.name] = _cast(np.stack(flat, axis=1), features, where)
    elif missing:
        raise InvalidInputError(f"{where} has no column or array for input(s) "
                                f"{[t.name for t in missing]}; it has {_names(columns)}; this "
                                "model needs " + ", ".join(t.describe() for t in spec.inputs))
    return ids, {name: inputs[name] for name in spec.input_names}


def _cast(values: np.ndarray, spec: Any, where: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(values, dtype=spec.dtype)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: input '{spec.name}' needs {spec.dtype} values; "
                                f"the file holds {values.dtype}") from None


def _names(columns: Mapping[str, Any]) -> list[str]:
    names = list(columns)
    return names[:12] + ([f"... {len(names) - 12} more"] if len(names) > 12 else [])


def predict(model: Any, rows: tuple[np.ndarray, Mapping[str, np.ndarray]], *,
            engine: str | None = None, threads: int | None = None, batch_size: int = 256,
            on_ray: bool = False, concurrency: int = 1, address: str | None = None,
            progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Run ``model`` (an artifact folder or ONNX file) over ``rows`` = (ids, inputs);
    ``progress(done, total)`` after each batch."""
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch_size and concurrency must be >= 1")
    ids, inputs = rows
    start = time.perf_counter()
    if on_ray and engine is None:  # chosen here, so that every actor runs the same engine
        from rtinfer.engines import chosen_engine

        engine = chosen_engine(model)
    if on_ray:
        outputs = _on_ray(str(model), inputs, engine, threads or 1, batch_size, concurrency,
                          address, progress)
        where = f"Ray Data, {concurrency} actor(s) of {threads or 1} CPU(s)"
    else:
        outputs = _in_process(model, inputs, engine, threads, batch_size, progress)
        where = "in-process"
    return Predictions(ids, outputs, time.perf_counter() - start, where)


def _in_process(model: Any, inputs: Mapping[str, np.ndarray], engine: str | None,
                threads: int | None, batch_size: int,
                progress: Callable[[int, int], None] | None) -> dict[str, np.ndarray]:
    import rtinfer
    from rtinfer.engines.base import run_in_batches

    with rtinfer.load(model, engine, threads) as session:
        return run_in_batches(session, inputs, batch_size, progress)


class _Predictor:
    """One Ray Data actor: the model loaded once, the rows read from the object store."""

    def __init__(self, model: str, engine: str | None, threads: int, rows: list[Any]) -> None:
        import ray

        import rtinfer

        self.session = rtinfer.load(model, engine, threads)
        self.inputs = ray.get(rows[0])  # a list hides the ref from Ray's argument resolution

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = batch["data"]
        out = self.session.run({k: v[index] for k, v in self.inputs.items()})
        return {"row": index, **{f"out/{k}": v for k, v in out.items()}}


def _on_ray(model: str, inputs: Mapping[str, np.ndarray], engine: str | None, threads: int,
            batch_size: int, concurrency: int, address: str | None,
            progress: Callable[[int, int], None] | None) -> dict[str, np.ndarray]:
    from rtinfer.scale.ray_serve import connect

    ray = connect(address)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # rtinfer reports progress
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]),
                  default=0)
    if address is None and threads > largest:  # a cluster's autoscaler may add larger nodes
        raise RtinferError(f"an actor of {threads} CPU(s) fits on no node of this Ray cluster "
                           f"(the largest has {largest:g}); give --threads {int(largest)} or "
                           "fewer")
    ray.data.DataContext.get_current().raise_original_map_exception = True  # the model's own
    n = len(next(iter(inputs.values())))
    # Row numbers already in the object store (no read task waits for a CPU the actors
    # hold), in blocks of whole batches: every batch holds the rows it holds in-process.
    per_block = batch_size * max(1, -(-n // (batch_size * 64)))
    rows = ray.data.from_numpy([np.arange(begin, min(n, begin + per_block))
                                for begin in range(0, n, per_block)])
    predicted = rows.map_batches(
        _Predictor, fn_constructor_kwargs={"model": str(Path(model).resolve()),
                                           "engine": engine, "threads": threads,
                                           "rows": [ray.put(dict(inputs))]},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=threads, batch_format="numpy")
    order: list[np.ndarray] = []
    chunks: dict[str, list[np.ndarray]] = {}
    done = 0
    try:
        for batch in predicted.iter_batches(batch_size=None, batch_format="numpy"):
            order.append(batch["row"])
            for key, value in batch.items():
                if key.startswith("out/"):
                    chunks.setdefault(key[4:], []).append(value)
            done += len(batch["row"])
            if progress is not None:
                progress(done, n)
    except ray.exceptions.RayError as exc:  # an actor failed: its own error, in one line
        cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
        lines = str(cause).strip().splitlines() or [type(cause).__name__]
        raise RtinferError(f"batch inference on Ray failed: {lines[-1]} (the model path must "
                           "exist on every node: a shared volume)") from None
    if done != n:
        raise RtinferError(f"Ray Data returned {done} of {n} rows")
    position = np.argsort(np.concatenate(order), kind="stable")
    out = {name: np.concatenate(parts)[position] for name, parts in chunks.items()}
    return {name: value.astype(str) if value.dtype == object else value  # strings come back
            for name, value in out.items()}                             # as objects


def write_predictions(path: str | Path, result: Predictions) -> Path:
    """Write ids and outputs: ``.npz`` (``ids`` and one array per output), or a ``.csv`` /
    ``.parquet`` table (an ``id`` column, then one column per output value: ``<out>`` for one
    value per row, ``<out>_0``, ``<out>_1``, … for more). Written to a temporary file and
    renamed, so a failure leaves no half-written file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv", ".parquet"):
        raise RtinferError(f"{path}: write predictions to a .npz, .csv or .parquet file")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial{suffix}")
    try:
        if suffix == ".npz":
            if "ids" in result.outputs:
                raise RtinferError("the model has an output named 'ids', which the .npz keeps "
                                   "for the row ids; write a .csv or .parquet instead")
            arrays: dict[str, Any] = {"ids": result.ids, **result.outputs}
            np.savez(staging, **arrays)
        else:
            _write_table(staging, suffix, _columns(result))
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def _columns(result: Predictions) -> dict[str, np.ndarray]:
    columns = {"id": result.ids}
    for name, value in result.outputs.items():
        flat = value.reshape(len(value), -1)
        names = [name] if flat.shape[1] == 1 else [f"{name}_{i}" for i in range(flat.shape[1])]
        if clash := [n for n in names if n in columns]:
            raise RtinferError(f"output column(s) {clash} would overwrite the ids or another "
                               "output; write a .npz instead")
        columns.update(zip(names, flat.T, strict=True))
    return columns


def _write_table(path: Path, suffix: str, columns: Mapping[str, np.ndarray]) -> None:
    if suffix == ".parquet":
        from rtinfer._deps import require

        pa = require("pyarrow", "Writing Parquet predictions")
        pq = require("pyarrow.parquet", "Writing Parquet predictions")
        pq.write_table(pa.table({k: pa.array(v) for k, v in columns.items()}), str(path))
        return
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        for row in zip(*(c.tolist() for c in columns.values()), strict=True):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
