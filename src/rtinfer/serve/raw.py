"""Raw inputs for models deployed from a kit or a task: the server runs the pre-processing.

A model folder whose ``rtinfer.json`` says ``{"kit": "intent"}`` (``"kit_size": "small"`` for
a reduced build) accepts, beside its tensors, the kit's raw form — so a client needs no
tokenizer, feature code or image decoder:

========== ================================================= =============================
kit        raw inputs (KServe v2)                            TF Serving ``instances``
========== ================================================= =============================
intent     ``text``: BYTES [N], one sentence each            ``["turn on the light", …]``
intent-zh  ``text``: BYTES [N], UTF-8 Chinese sentences      ``["打开客厅的灯", …]``
fraud      one input per field (``amount`` FP64 [N],         ``[{"amount": 12.5, …}, …]``
           ``merchant_category`` BYTES [N], …)
perception ``image_png``: BYTES [N], 8-bit PNG files         ``[{"b64": "iVBOR…"}, …]``
========== ================================================= =============================

A model written by ``rtinfer optimize task.toml`` records its task's pre-processing in
``rtinfer.json`` instead (``"raw"``: a text task's tokenizer, copied into the model folder, or
a tabular task's columns; :func:`raw_inputs_from`): a text task takes ``text`` as above, a
tabular task one FP64 input per feature column.

The raw request is turned into model inputs when it is decoded, before it joins a batch, so a
bad raw request fails alone with a 400 and raw and tensor requests share batches.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._paths import files_inside, relative_inside
from rtinfer.errors import ConfigError, InvalidInputError

__all__ = ["RawInputs", "decode_png", "raw_inputs_for", "raw_inputs_from"]


@dataclass(frozen=True)
class RawInputs:
    """How one kit's (or task's) raw inputs become model inputs."""

    kit: str                     # "intent", or "task 'digits'" for a task's model
    names: tuple[str, ...]
    datatypes: tuple[str, ...]
    to_items: Callable[[Mapping[str, np.ndarray]], list[Any]]
    preprocess: Callable[[Sequence[Any]], dict[str, np.ndarray]]
    # Large bodies are decoded in worker threads; a fast tokenizer may not be used by two
    # threads at once ("Already borrowed"), so pre-processing runs one request at a time.
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def matches(self, names: Sequence[str]) -> bool:
        """True when ``names`` are exactly the raw inputs; raises when they are only some."""
        given, raw = set(names), set(self.names)
        if given & raw and given != raw:
            raise InvalidInputError(
                f"raw input for {self.source} needs {list(self.names)}; missing "
                f"{sorted(raw - given)}, unexpected {sorted(given - raw)}")
        return given == raw

    def convert(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model inputs for the raw ``columns`` (every column one value per example)."""
        lengths = {len(np.ravel(v)) for v in columns.values()}
        if len(lengths) != 1:
            raise InvalidInputError(f"raw inputs {sorted(columns)} must hold one value per "
                                    f"example each; got lengths {sorted(lengths)}")
        flat = {k: np.ravel(v) for k, v in columns.items()}
        try:
            # Numbers the pre-processing cannot take (a log of a negative, an overflow) fail
            # here as FloatingPointError, not as NaN features fed to the model.
            with self.lock, np.errstate(divide="raise", over="raise", invalid="raise"):
                return self.preprocess(self.to_items(flat))
        except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as exc:
            # Pre-processing reads only the client's values: what it refuses is theirs to fix.
            raise InvalidInputError(f"raw input for {self.source}: {exc}") from None

    @property
    def source(self) -> str:
        return self.kit if self.kit.startswith("task") else f"the {self.kit} kit"

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": n, "datatype": d, "shape": [-1]}
                for n, d in zip(self.names, self.datatypes, strict=True)]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("raw text must be UTF-8") from None
    if isinstance(value, str):
        return value
    raise InvalidInputError(f"raw text must be strings, got {type(value).__name__}")


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return _text(value)
    return value.item() if hasattr(value, "item") else value


def raw_inputs_for(kit_name: str, size: str = "full") -> RawInputs:
    """The raw-input converter of ``kit_name`` (the kit must be built: ``rtinfer kits
    build``)."""
    from rtinfer import kits

    kit = kits.load(kit_name, size=size, build=False)
    if kit_name in ("intent", "intent-zh"):
        raw = RawInputs(kit_name, ("text",), ("BYTES",),
                        lambda cols: [_text(v) for v in cols["text"]], kit.preprocess)
    elif kit_name == "fraud":
        from rtinfer.kits.fraud import FIELDS as fields

        types = tuple("BYTES" if f in ("merchant_category", "country", "home_country")
                      else "FP64" for f in fields)
        raw = RawInputs("fraud", fields, types,
                        lambda cols: [{f: _scalar(cols[f][i]) for f in fields}
                                      for i in range(len(cols[fields[0]]))], kit.preprocess)
    elif kit_name == "perception":
        raw = RawInputs("perception", ("image_png",), ("BYTES",),
                        lambda cols: [decode_png(bytes(v)) for v in cols["image_png"]],
                        kit.preprocess)
    else:
        raise InvalidInputError(f"kit '{kit_name}' has no raw input form")
    # Warm the pre-processing too (a tokenizer loads on first use): ready means fast.
    example = kit.split("test").raw
    kit.preprocess([{k: v[0].item() for k, v in example.items()} if len(example) > 1
                    else next(iter(example.values()))[0].tolist()])
    return raw


def raw_inputs_from(settings: Mapping[str, Any], name: str, model_dir: Path,
                    root: Path) -> RawInputs:
    """The raw-input converter a task's model folder records in ``rtinfer.json`` (``"raw"``,
    written by ``rtinfer optimize task.toml``): ``text`` (one BYTES input, tokenized with the
    tokenizer files copied into the model folder) or ``columns`` (one FP64 input per feature
    column, stacked into the model's inputs). Only files inside ``root`` are opened."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"model '{name}': rtinfer.json's raw must be an object")
    kind, what = settings.get("kind"), f"task '{name}'"
    inputs = settings.get("inputs")
    if kind == "text":
        from rtinfer.models.transformers_folder import encode, load_tokenizer

        folder = relative_inside(model_dir, settings.get("tokenizer"),
                                 "rtinfer.json's raw tokenizer folder", root)
        files_inside(root, folder)  # every file of it (links included) stays in the repository
        max_length = settings.get("max_length", 128)
        if not isinstance(inputs, list) or not inputs or not isinstance(max_length, int):
            raise ConfigError(f"model '{name}': rtinfer.json's raw.inputs must list the "
                              "model inputs the tokenizer fills (and max_length a number)")
        # This version's own tokenizer, loaded once: never one cached for another version.
        tokenizer = load_tokenizer(folder)

        def text(items: Sequence[Any]) -> dict[str, np.ndarray]:
            if not items:
                raise ValueError("no sentences")
            enc = encode(tokenizer, items, max_length=max_length)
            return {n: enc[n] for n in inputs}

        raw = RawInputs(what, ("text",), ("BYTES",),
                        lambda cols: [_text(v) for v in cols["text"]], text)
        text(["warm up"])  # the tokenizer loads now, not on the first request
        return raw
    if kind == "columns":
        dtypes = settings.get("dtypes") or {}
        if not isinstance(inputs, Mapping) or not inputs or not all(
                isinstance(c, list) and c and k in dtypes for k, c in inputs.items()):
            raise ConfigError(f"model '{name}': rtinfer.json's raw.inputs must map each model "
                              "input to its columns, with raw.dtypes")
        columns = tuple(c for cols in inputs.values() for c in cols)
        try:
            types = {k: np.dtype(dtypes[k]) for k in inputs}
        except TypeError as exc:
            raise ConfigError(f"model '{name}': rtinfer.json's raw.dtypes: {exc}") from None
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise ConfigError(f"model '{name}': rtinfer.json's raw.inputs must name distinct "
                              "columns")

        def rows(items: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
            return {k: np.asarray([[float(r[c]) for c in cols] for r in items],
                                  dtype=types[k]) for k, cols in inputs.items()}

        rows([dict.fromkeys(columns, 0.0)])  # the mapping works before the first request
        return RawInputs(what, columns, ("FP64",) * len(columns),
                         lambda cols: [{c: _scalar(cols[c][i]) for c in columns}
                                       for i in range(len(cols[columns[0]]))], rows)
    raise ConfigError(f"model '{name}': rtinfer.json's raw.kind must be 'text' or 'columns', "
                      f"got {kind!r}")


#: Largest decoded image, in pixels (2048 x 2048; a 1080p frame is 2.1 M): a PNG of a few
#: kilobytes can declare gigapixels and inflate to gigabytes, so the size is checked before
#: inflating and the inflater is bounded by the declared size. (The Average and Paeth filters
#: are undone byte by byte in Python, about a second per megapixel: large images belong in
#: tensors, not raw PNG.)
MAX_PNG_PIXELS = 1 << 22


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit, non-interlaced PNG (gray, gray+alpha, RGB or RGBA) as gray (H, W) in [0, 1].

    Enough for camera frames and test images without an imaging library; palette, 16-bit and
    interlaced files are refused by name, and so is an image over :data:`MAX_PNG_PIXELS`.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InvalidInputError("image_png is not a PNG file (bad signature)")
    pos, header, chunks = 8, b"", []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if len(header) != 13 or not chunks:
        raise InvalidInputError("image_png is truncated (no IHDR or IDAT chunk)")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise InvalidInputError(f"image_png must be 8-bit gray/RGB(A), non-interlaced; got "
                                f"bit depth {depth}, color type {color}, interlace {interlace}")
    if not 0 < width * height <= MAX_PNG_PIXELS:
        raise InvalidInputError(f"image_png is {width}x{height}; images up to "
                                f"{MAX_PNG_PIXELS:,} pixels are accepted")
    stride = width * channels
    expected = height * (stride + 1)
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(b"".join(chunks), expected + 1)  # never more than declared
    except zlib.error as exc:
        raise InvalidInputError(f"image_png data is corrupt: {exc}") from None
    if len(raw) != expected:
        raise InvalidInputError("image_png data does not match its declared size")
    pixels = _unfilter(raw, height, stride, channels)  # (H, W * C) uint8
    image = pixels.reshape(height, width, channels).astype(np.float32) / 255.0
    if channels < 3:
        return image[..., 0]  # gray (alpha dropped)
    return image[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    out = np.zeros((height, stride), np.int32)
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        elif kind in (1, 3, 4):  # depend on the pixel to the left: byte by byte
            cur = np.zeros(stride, np.int32)
            for x in range(stride):
                left = cur[x - bpp] if x >= bpp else 0
                up, up_left = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) // 2
                else:  # Paeth
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                cur[x] = (line[x] + pred) & 0xFF
        else:
            raise InvalidInputError(f"image_png uses unknown filter type {kind}")
        out[y] = prev = cur
    return out.astype(np.uint8)
