"""Engines by name, imported only when chosen, and :func:`load`, the way in for users.

    >>> session = rtinfer.load("model.onnx", engine="openvino", threads=2)  # doctest: +SKIP
    >>> session.run({"x": x})["y"].shape                                      # doctest: +SKIP

Names: ``onnxruntime`` (alias ``ort``), ``openvino`` (``ov``), ``torch`` (``pytorch``),
``litert`` (``tflite``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from collections.abc import Mapping
from typing import Any

from rtinfer.engines.base import Engine, Session
from rtinfer.errors import EngineUnavailableError, UnknownEngineError
from rtinfer.hardware import usable_cores

__all__ = ["DEFAULT_ENGINE", "Engine", "Session", "available_engines", "chosen_engine",
           "engine_class", "engine_names", "load", "resolve_engine"]

DEFAULT_ENGINE = "onnxruntime"

# name -> (module:class, the Python package it needs)
_REGISTRY = {
    "onnxruntime": ("rtinfer.engines.ort_engine:OnnxRuntimeEngine", "onnxruntime"),
    "openvino": ("rtinfer.engines.openvino_engine:OpenVinoEngine", "openvino"),
    "torch": ("rtinfer.engines.torch_engine:TorchEngine", "torch"),
    "litert": ("rtinfer.engines.litert_engine:LiteRtEngine", "ai_edge_litert"),
}
_ALIASES = {"ort": "onnxruntime", "ov": "openvino", "pytorch": "torch", "tflite": "litert"}


def engine_names() -> list[str]:
    return list(_REGISTRY)


def resolve_engine(name: str) -> str:
    """The canonical engine name for ``name`` or an alias; unknown names raise."""
    if not isinstance(name, str):
        raise TypeError(f"engine must be a name (str), got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownEngineError(
            f"unknown engine '{name}'; choose one of {engine_names()} "
            f"(aliases: {', '.join(f'{a}={c}' for a, c in _ALIASES.items())})"
        )
    return key


def available_engines() -> list[str]:
    """Engines whose runtime package is installed (found without importing it)."""
    return [n for n, (_, pkg) in _REGISTRY.items() if importlib.util.find_spec(pkg) is not None]


def engine_class(name: str) -> type[Engine]:
    target, _ = _REGISTRY[resolve_engine(name)]
    module, cls = target.split(":")
    engine: type[Engine] = getattr(importlib.import_module(module), cls)
    return engine


def load(
    model: Any,
    engine: str | None = None,
    threads: int | None = None,
    *,
    example_inputs: Any = None,
    warmup: bool | Mapping[str, Any] = True,
    **options: Any,
) -> Session:
    """Load ``model`` on ``engine`` with an explicit intra-op thread budget.

    ``model`` is anything :func:`rtinfer.import_model` takes (ONNX path, artifact, transformers
    folder, nn.Module or scikit-learn/XGBoost model with ``example_inputs``, ImportedModel).
    ``engine`` defaults to the engine an artifact's manifest records (``deployment.engine``:
    where ``rtinfer optimize`` / ``quantize`` measured it, and where ``rtinfer serve`` runs it),
    else ``litert`` for a ``.tflite`` model and ``onnxruntime`` for the rest; ``threads`` to
    the cores this process may use.
    With ``warmup`` one batch runs before the session is returned, so the first real request
    does not pay for lazy initialisation: the inputs given (``warmup={"x": real_batch}``, which
    must run), else a synthetic batch whose free dimensions are 1 — a model that cannot take
    that (an average pool larger than a 1-pixel image on OpenVINO) is still returned, with a
    warning, and its first request pays the start-up. ``options`` go to the engine (see each
    engine's docstring).
    """
    from rtinfer.models import import_model

    if engine is None:
        model, engine = _deployed(model)
    name = resolve_engine(engine) if engine else None  # unknown names fail before any work
    if threads is None:
        threads = usable_cores()
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}; pass None for all usable cores")
    imported = import_model(model, example_inputs)
    name = name or _default_for(imported.is_tflite)
    cls = engine_class(name)
    if imported.format not in cls.formats:
        runs = [n for n in engine_names() if imported.format in engine_class(n).formats]
        raise EngineUnavailableError(
            f"{imported.source.description} is a .{imported.format} model, which only "
            f"engine={' or '.join(repr(n) for n in runs)} runs; to run it on {name}, import "
            "its Keras or SavedModel source instead")
    start = time.perf_counter()
    session = Session(cls(imported, threads, **options), load_seconds=0.0)
    session.load_seconds = time.perf_counter() - start
    try:
        if isinstance(warmup, Mapping):
            session.run(dict(warmup))
        elif warmup:
            _warm_up(session, imported, name)
    except BaseException:
        session.close()
        raise
    return session


def _warm_up(session: Session, imported: Any, name: str) -> None:
    """One synthetic batch, its free dimensions 1; a model that cannot take size 1 there (an
    unpadded convolution on a 1-row image) is tried again at 32 — a model that fails both is
    a load failure, one that runs at 32 is warmed up, with a warning that says so."""
    try:
        session.run(imported.spec.example_inputs(batch=1))
    except Exception as exc:
        spec = imported.spec
        free = {d for t in spec.inputs for d in t.shape[1:] if not isinstance(d, int)}
        if not free:
            raise
        retry = {t.name: tuple(1 if i == 0 and not isinstance(d, int) else
                               (d if isinstance(d, int) else 32) for i, d in enumerate(t.shape))
                 for t in spec.inputs}
        session.run(spec.example_inputs(batch=1, shapes=retry))  # a failure here is real
        import logging

        logging.getLogger("rtinfer").warning(
            "%s on %s: warm-up with a synthetic batch (free dimensions 1) failed (%s: %s); "
            "warmed up at 32 instead, so the session is ready. Give real inputs to warm it "
            "up at their shapes (load(..., warmup={name: array}))",
            imported.source.description, name, type(exc).__name__, str(exc)[:200])


def deployed_engine(artifact: Any) -> str | None:
    """The engine an artifact records (:attr:`rtinfer.deploy.artifact.Artifact.engine`) when it is
    installed here; else None (the default engine), with a warning."""
    engine = artifact.engine
    if engine is not None and engine not in available_engines():
        import logging

        logging.getLogger("rtinfer").warning(
            "%s was chosen to run on %s, which is not installed here; loading it on %s "
            "(pip install 'rtinfer[%s]' to run it where it was measured)", artifact.path,
            engine, DEFAULT_ENGINE, engine)
        return None
    return engine


def chosen_engine(model: Any) -> str:
    """The engine :func:`load` runs ``model`` on when none is given: the one an artifact (or a
    model folder's newest version) records when installed here, else LiteRT for a ``.tflite``
    model and the default for the rest."""
    model, engine = _deployed(model)
    if engine:
        return engine
    tflite = getattr(model, "is_tflite", None)
    if tflite is None and isinstance(model, (str, os.PathLike)):
        tflite = str(model).lower().endswith(".tflite")
    return _default_for(bool(tflite))


def _default_for(tflite: bool) -> str:
    """The engine a model with no recorded engine runs on: LiteRT for a .tflite file (only it
    runs one), else the default."""
    return "litert" if tflite else DEFAULT_ENGINE


def _deployed(model: Any) -> tuple[Any, str | None]:
    """For an artifact folder: its model (loaded once, hashes checked) and its
    :func:`deployed_engine`; anything else as given, with no engine."""
    from pathlib import Path

    if not isinstance(model, (str, os.PathLike)) or not Path(model).is_dir():
        return model, None
    from rtinfer.deploy.artifact import is_artifact, is_model_folder, load_artifact

    folder = Path(model)
    if not (is_artifact(folder) or is_model_folder(folder)):
        return model, None
    art = load_artifact(folder)
    return art.model, deployed_engine(art)
