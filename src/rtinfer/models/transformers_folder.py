"""Import a Hugging Face transformers model folder (config.json + weights) through ONNX.

A folder whose config names a ``…ForSequenceClassification`` architecture is imported with
its classification head (output ``logits``); any other, as the bare encoder.

The folder is read locally only: nothing is downloaded. The export has the tokenizer's inputs
(``input_ids``, ``attention_mask``, ``token_type_ids`` for BERT-like models) with dynamic
``batch`` and ``sequence`` axes, and is cached under :func:`cache_dir` keyed by the folder's
file hashes and the torch version, so a second import costs a hash and a file load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._cache import cache_dir
from rtinfer._deps import require
from rtinfer._hashing import sha256_file, sha256_files
from rtinfer.errors import ModelLoadError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.models.onnx_file import load_onnx

__all__ = ["cache_dir", "encode", "from_transformers", "is_transformers_folder",
           "load_tokenizer", "tokenize"]

# Files that define a model's behaviour; README and the like do not change the export.
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
# One unpadded probe sentence, twice (batch 2): padded positions of a transformer's output are
# undefined (the mask hides them), so they would make the comparison meaningless.
_PROBE = ["rtinfer checks that the export matches the original model."] * 2


def is_transformers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / f).exists() for f in ("model.safetensors", "pytorch_model.bin",
                                      "model.safetensors.index.json")
    )


def tokenize(folder: str | Path, texts: Sequence[str], seq_len: int | None = None, *,
             max_length: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` with the folder's tokenizer into int64 arrays (:func:`encode`)."""
    return encode(_tokenizer(str(Path(folder).resolve())), texts, seq_len,
                  max_length=max_length)


def encode(tokenizer: Any, texts: Sequence[str], seq_len: int | None = None, *,
           max_length: int | None = None) -> dict[str, np.ndarray]:
    """``tokenizer``'s int64 arrays for ``texts``.

    With ``seq_len`` every row is padded (or truncated) to exactly that many tokens, the way a
    fixed-shape benchmark feeds a model; without it, to the longest text — cut at
    ``max_length`` tokens when given (one pass: a long request is not tokenized twice).
    """
    kwargs: dict[str, Any] = (
        {"padding": "max_length", "max_length": seq_len, "truncation": True} if seq_len else
        {"padding": True, "truncation": True, "max_length": max_length} if max_length else
        {"padding": True}
    )
    enc = tokenizer(list(texts), return_tensors="np", **kwargs)
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def load_tokenizer(folder: str | Path) -> Any:
    """The folder's tokenizer, read from it alone (nothing downloaded)."""
    transformers = require("transformers", "Tokenizing text for a transformers model")
    return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


@lru_cache(maxsize=4)
def _tokenizer(folder: str) -> Any:
    """Loading a tokenizer reads and parses its files (~0.2 s): do it once per folder."""
    return load_tokenizer(folder)


def from_transformers(folder: str | Path, *, use_cache: bool = True) -> ImportedModel:
    """Export the model in ``folder`` to ONNX (or reuse a cached export) and verify it."""
    from rtinfer.models.torch_export import from_torch

    folder = Path(folder).resolve()
    if not is_transformers_folder(folder):
        raise ModelLoadError(
            f"'{folder}' is not a transformers model folder (it needs config.json and "
            "model.safetensors or pytorch_model.bin)"
        )
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES]
    digest = sha256_files(files, folder)
    source = Source("transformers", f"transformers folder {folder}", digest)
    # The head decides the graph (``logits`` or the encoder's outputs): part of the key.
    key = f"{digest[:16]}-torch{metadata.version('torch')}-{'cls' if _has_head(folder) else 'enc'}"
    cached = cache_dir() / "exports" / key
    if use_cache and (cached / "check.json").is_file():
        check = json.loads((cached / "check.json").read_text())
        if sha256_file(cached / "model.onnx") == check.pop("onnx_sha256", None):
            model = load_onnx(cached / "model.onnx", source=source)
            model.export_check = check
            model.torch_loader = lambda: _load_module(folder)
            return model
        shutil.rmtree(cached, ignore_errors=True)  # edited or half-written: export again

    module = _load_module(folder)
    feeds = tokenize(folder, _PROBE)
    tmp = Path(tempfile.mkdtemp(prefix="rtinfer-hf-")) if use_cache else None
    model = from_torch(
        module, feeds, source=source, out_dir=tmp,
        dynamic_axes={name: {1: "sequence"} for name in feeds},
    )
    if tmp is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        check = {**model.export_check, "onnx_sha256": sha256_file(tmp / "model.onnx")}
        (tmp / "check.json").write_text(json.dumps(check))
        staging = Path(tempfile.mkdtemp(prefix=key, dir=cached.parent))
        shutil.copytree(tmp, staging, dirs_exist_ok=True)
        try:
            staging.rename(cached)  # atomic: a concurrent import sees all of it or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
        model.path = cached / "model.onnx"
    return model


def _has_head(folder: Path) -> bool:
    """Whether the folder's config names a sequence-classification architecture."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    return any(str(a).endswith("ForSequenceClassification")
               for a in config.get("architectures") or [])


def _load_module(folder: Path) -> Any:
    """The folder's model: with its sequence-classification head when its config names one
    (output ``logits``), else the bare encoder (``last_hidden_state`` …)."""
    transformers = require("transformers", "Importing transformers models")
    auto = (transformers.AutoModelForSequenceClassification if _has_head(folder)
            else transformers.AutoModel)
    try:
        module = auto.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"transformers could not load '{folder}': {exc}") from exc
    return module.eval()
