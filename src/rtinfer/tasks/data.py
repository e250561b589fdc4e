"""A task's data: CSV, Parquet or ``.npz`` tables, their splits, labels and model inputs.

A *table* is ``{column: array}`` with one row per sample; a ``.npz`` may also hold arrays of
any rank named after the model's inputs (images, token ids). Splits come from the task file
(one file each), from one file and a seeded rule, stratified by label, or from one ``.npz``
that stores them (``split = "stored"``: arrays ``train/x``, ``train/label``, ``test/x``, …; the
layout the kits' ``data.npz`` has). Labels become
integers in the order of ``data.classes`` (or the sorted classes of the training data); a
class the training data never shows, rows of a held-out split file repeated in a training or
validation file, and ragged CSV rows are errors that name the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer.errors import TaskError
from rtinfer.tasks.spec import DataSpec

__all__ = ["Table", "class_names", "encode_labels", "input_columns", "read_stored_splits",
           "read_table", "split_tables", "table_inputs"]

Table = dict[str, np.ndarray]


def read_table(path: Path, raw: Collection[str] = ()) -> Table:
    """The columns of a CSV (header row), Parquet or ``.npz`` file. Columns named in ``raw``
    stay as the file holds them (an id: CSV text "007", Parquet's own int64), the others
    become numbers when every value is one."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        table = _read_npz(path)
    elif suffix == ".parquet":
        from rtinfer._deps import require

        pq = require("pyarrow.parquet", "Reading Parquet data")
        try:
            arrow = pq.read_table(str(path))
        except Exception as exc:  # pyarrow raises its own ArrowInvalid etc.
            raise TaskError(f"{path}: cannot read it as Parquet ({exc})") from None
        table = {name: _column(arrow.column(name).to_pylist(), path, name, name in raw)
                 for name in arrow.column_names}
    else:
        table = _read_csv(path, raw)
    _check_lengths(table, str(path))
    return table


def read_stored_splits(path: Path) -> dict[str, Table]:
    """The splits an ``.npz`` stores as ``<split>/<name>`` arrays, each a table of ``<name>``
    columns (``train/inputs/x`` is column ``inputs/x`` of the train split)."""
    from rtinfer.tasks.spec import SPLITS

    tables: dict[str, Table] = {}
    outside = []
    for key, value in _read_npz(path).items():
        split, _, name = key.partition("/")
        if split in SPLITS and name:
            tables.setdefault(split, {})[name] = value
        else:
            outside.append(key)
    if outside:
        raise TaskError(f"{path}: data.split = \"stored\" reads arrays named <split>/<name> "
                        f"with a split among {list(SPLITS)}; {sorted(outside)[:5]} are not: "
                        "rename them, or give one file per split")
    for needed in ("validation", "test"):
        if needed not in tables:
            raise TaskError(f"{path}: no '{needed}/...' arrays; data.split = \"stored\" needs "
                            f"a validation and a test split (it has {sorted(tables)})")
    for split, table in tables.items():
        _check_lengths(table, f"{path} ({split}/...)")
    return {s: tables[s] for s in SPLITS if s in tables}


def _read_npz(path: Path) -> Table:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:  # object arrays need pickle: refused
        raise TaskError(f"{path}: cannot read it as .npz ({exc}); store plain numeric "
                        "or string arrays") from None


def _check_lengths(table: Table, where: str) -> None:
    lengths = {k: len(v) if v.ndim else 0 for k, v in table.items()}
    if not table or len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
        raise TaskError(f"{where}: needs columns of one common, non-zero length; got {lengths}")


def _read_csv(path: Path, raw: Collection[str] = ()) -> Table:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # Excel's BOM
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TaskError(f"{path}: cannot read it as UTF-8 CSV ({exc})") from None
    if len(rows) < 2:
        raise TaskError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or not all(header):
        raise TaskError(f"{path}: the header row needs distinct, non-empty column names; "
                        f"got {header}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TaskError(f"{path}: line {i} has {len(row)} fields but the header has "
                            f"{len(header)}; fix or remove that row (quote fields that "
                            "contain commas)")
    return {name: _column([r[j] for r in rows[1:]], path, name, name in raw)
            for j, name in enumerate(header)}


def _column(values: Sequence[Any], path: Path, name: str, raw: bool = False) -> np.ndarray:
    """Numbers when every value is one, else strings (never an object array); with ``raw``
    the values as they are."""
    if any(v is None or v == "" for v in values):
        raise TaskError(f"{path}: column '{name}' has empty values; fill or drop them")
    if raw:
        return np.asarray(values)
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray([str(v) for v in values])


def split_tables(spec: DataSpec, label: str | None) -> dict[str, Table]:
    """The split tables the task file describes; see the module docstring."""
    if spec.stored:
        tables = read_stored_splits(spec.files["all"])
        _no_overlap(tables, spec)
        return tables
    if spec.fractions is None:
        tables = {s: read_table(f) for s, f in spec.files.items()}
        _no_overlap(tables, spec)
        return tables
    source = spec.files["all"]
    table = read_table(source)
    n = len(next(iter(table.values())))
    from rtinfer.kits.base import stratified_split

    strata = (np.unique(table[label], return_inverse=True)[1] if label is not None
              and label in table else np.zeros(n, np.int64))  # unlabelled: one stratum
    index = stratified_split(strata, spec.fractions, spec.seed)
    small = [s for s, idx in index.items() if len(idx) == 0]
    if small:
        raise TaskError(f"{source}: {n} rows leave the split(s) {small} empty; give more rows "
                        "or larger shares in data.split")
    return {s: {k: v[idx] for k, v in table.items()} for s, idx in index.items()}


def _no_overlap(tables: Mapping[str, Table], spec: DataSpec) -> None:
    """Rows of the held-out splits must not appear in the splits that train or choose:
    compared on the columns both files have, numbers as float64 (a CSV's 3.0 is an npz's 3)."""
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test"),
                 ("calibration", "test")):
        if a not in tables or b not in tables:
            continue
        common = sorted(set(tables[a]) & set(tables[b]))
        if not set(common) - {spec.label}:  # nothing but the label to compare rows by
            continue
        shared = np.isin(_row_hashes(tables[b], common), _row_hashes(tables[a], common)).sum()
        if shared:
            raise TaskError(f"{_file(spec, b)}: {shared} row(s) of the {b} split also appear "
                            f"in the {a} split ({_file(spec, a)}); the {b} split must be "
                            "unseen data: remove them from one of the "
                            + ("splits" if spec.stored else "files"))


def _file(spec: DataSpec, split: str) -> str:
    """Where ``split`` is read from, for messages."""
    return f"{spec.files['all']} ({split}/...)" if spec.stored else str(spec.files[split])


def _row_hashes(table: Table, columns: Sequence[str]) -> np.ndarray:
    """One 64-bit hash per row over ``columns``, vectorised (10^8 cells in seconds): every
    cell mixed with its position (splitmix64), then the columns chained."""
    n = len(table[columns[0]])
    out = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            flat = table[name].reshape(n, -1)
            if flat.dtype.kind in "fiub":
                cells = (flat.astype(np.float64) + 0.0).view(np.uint64)  # -0.0 is 0.0
            else:
                cells = np.array([int(hashlib.blake2b(str(v).encode(), digest_size=8)
                                      .hexdigest(), 16) for v in flat.ravel()],
                                 dtype=np.uint64).reshape(flat.shape)
            position = np.arange(flat.shape[1], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            column = _mix(cells + position[None, :]).sum(axis=1, dtype=np.uint64)
            salt = np.uint64(int(hashlib.sha256(name.encode()).hexdigest()[:15], 16))
            out = _mix(out ^ _mix(column + salt))
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (float bit patterns
    differ only in their high bits, which a plain multiply-and-add would not spread)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def class_names(tables: Mapping[str, Table], spec: DataSpec, label: str) -> list[str]:
    """The classes in output order: ``data.classes``, else the training labels' sorted
    values (integers as such, strings alphabetically)."""
    if spec.classes is not None:
        return list(spec.classes)
    train = tables.get("train", tables.get("validation"))
    assert train is not None
    values = np.unique(train[label])
    return [_label_text(v) for v in values]


def encode_labels(table: Table, file: str, label: str, classes: Sequence[str]) -> np.ndarray:
    """Integer targets for ``table[label]``; an unknown class is an error naming it."""
    if label not in table:
        raise TaskError(f"{file}: no label column '{label}'; it has {sorted(table)}. Set "
                        "data.label to the column that holds the classes")
    index = {c: i for i, c in enumerate(classes)}
    values = [_label_text(v) for v in table[label]]
    if not set(values) <= set(index) and all(
            v.isdigit() and int(v) < len(classes) for v in values):
        index = {str(i): i for i in range(len(classes))}  # integers, named by data.classes
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise TaskError(f"{file}: label column '{label}' has class(es) {unknown[:5]} that are "
                        f"not among the classes {list(classes)[:10]} (those of data.classes, "
                        "else of the training data); add them to the training split, or list "
                        "every class in data.classes")
    return np.asarray([index[v] for v in values], dtype=np.int64)


def _label_text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def table_inputs(table: Table, file: str, spec: DataSpec, names: Sequence[str],
                 dtypes: Mapping[str, str], label: str | None) -> dict[str, np.ndarray]:
    """Model inputs (``names``, cast to ``dtypes``) from a non-text table: ``data.inputs``,
    ``data.features`` (one input), arrays named after the inputs, or (one input) every column
    but the label. An input's columns are joined along axis 1; a single column of rank >= 2
    (an image array) is the input as it is."""
    if spec.inputs is not None:
        mapping = dict(spec.inputs)
        wrong = sorted(set(mapping) ^ set(names))
        if wrong:
            raise TaskError(f"{file}: data.inputs names {sorted(mapping)} but the model's "
                            f"inputs are {list(names)}")
    elif all(n in table for n in names):
        return {n: _cast(table[n], dtypes[n], file, n) for n in names}
    elif len(names) == 1:
        mapping = {names[0]: spec.features or tuple(c for c in table if c != label)}
    else:
        raise TaskError(f"{file}: the model has inputs {list(names)}; map columns to them "
                        "with data.inputs = {{ name = [columns] }} or store arrays named "
                        "after them in an .npz")
    out = {}
    for name, columns in mapping.items():
        missing = [c for c in columns if c not in table]
        if missing:
            raise TaskError(f"{file}: no column(s) {missing} (for model input '{name}'); it "
                            f"has {sorted(table)}")
        text = [c for c in columns if table[c].dtype.kind not in "fiub"]
        if text:
            raise TaskError(f"{file}: column(s) {text} hold text, not numbers; a feature "
                            "column must be numeric (encode categories first)")
        out[name] = _cast(_join([table[c] for c in columns]), dtypes[name], file, name)
    return out


def input_columns(table: Table, spec: DataSpec, name: str, label: str | None) -> list[str]:
    """The columns of ``table`` that feed model input ``name`` (as :func:`table_inputs` reads
    them; empty for text)."""
    if spec.text:
        return []
    if spec.inputs is not None:
        return list(spec.inputs.get(name, ()))
    if name in table:
        return [name]
    return list(spec.features or (c for c in table if c != label))


def _join(columns: Sequence[np.ndarray]) -> np.ndarray:
    if len(columns) == 1 and columns[0].ndim >= 2:
        return columns[0]                                    # (N, ...) as stored
    n = len(columns[0])
    return np.concatenate([c.reshape(n, -1) for c in columns], axis=1)  # (N, columns)


def _cast(values: np.ndarray, dtype: str, file: str, name: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(values.astype(dtype))
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{file}: input '{name}' cannot become {dtype}: {exc}") from None
