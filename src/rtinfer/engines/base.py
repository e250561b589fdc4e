"""The one small interface every engine implements, and the session users hold.

An engine gets an :class:`ImportedModel` and a thread budget, and runs already-validated feeds::

    class Engine:
        name = "onnxruntime"
        def __init__(self, model, threads, **options): ...   # load + compile
        def run(self, feeds) -> dict[str, np.ndarray]: ...    # feeds in spec order
        def effective_threads(self) -> int: ...               # as the engine itself reports

:class:`Session` wraps an engine with input validation, so every engine rejects bad input with
the same :class:`InvalidInputError`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from rtinfer.models.imported import ImportedModel
from rtinfer.spec import ModelSpec

__all__ = ["Engine", "Session", "run_in_batches", "runtime_message"]


class Engine(ABC):
    """Base class of engines; subclasses import their runtime inside ``__init__``."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # the model files it runs (ImportedModel.format)

    def __init__(self, model: ImportedModel, threads: int, **options: Any) -> None:
        self.model = model
        self.threads = threads
        self.options = options

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated ``feeds`` (numpy arrays in spec order); return outputs by name."""

    @abstractmethod
    def effective_threads(self) -> int:
        """The intra-op thread count the runtime reports it is using."""

    def describe(self) -> dict[str, Any]:
        """Engine settings worth recording beside a measurement."""
        return {"engine": self.name, "threads": self.effective_threads()}

    def close(self) -> None:  # noqa: B027 - optional hook; most runtimes free on GC
        """Release runtime resources early."""


class Session:
    """A loaded model on one engine: ``session.run({"x": array}) -> {"y": array}``.

    ``run`` is safe to call from several threads; calls are serialised, because one compiled
    model and its thread pool is what the thread budget was chosen for.
    """

    def __init__(self, engine: Engine, load_seconds: float) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.load_seconds = load_seconds

    @property
    def spec(self) -> ModelSpec:
        return self._engine.model.spec

    @property
    def model(self) -> ImportedModel:
        return self._engine.model

    @property
    def engine(self) -> str:
        return self._engine.name

    @property
    def threads(self) -> int:
        """The thread budget the engine reports, not merely the one that was asked for."""
        return self._engine.effective_threads()

    def describe(self) -> dict[str, Any]:
        return self._engine.describe()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_validated(self.spec.validate(inputs))

    def run_validated(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run feeds that already passed ``spec.validate`` (the server validates each request
        before batching; checking the concatenated batch again would be wasted work)."""
        with self._lock:
            return self._engine.run(feeds)

    def close(self) -> None:
        # After any call in flight (a load generator's straggler): closing a runtime's session
        # under a running call would free what that call is using.
        with self._lock:
            self._engine.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Session(engine={self.engine!r}, threads={self.threads}, "
                f"model={self.model.source.description!r})")


def runtime_message(exc: BaseException) -> str:
    """The informative line of a runtime's error: runtimes put file/line noise first."""
    lines = [ln.strip(" -") for ln in str(exc).strip().splitlines() if ln.strip(" -")]
    for ln in lines:
        if any(k in ln.lower() for k in ("no conversion rule", "not implemented", "not supported",
                                         "unsupported", "invalid", "mismatch")):
            return ln
    noisy = ("Exception from", "Check '")
    useful = [ln for ln in lines if not ln.startswith(noisy)]
    return (useful or lines or [type(exc).__name__])[0]


def run_in_batches(session: Session, inputs: Mapping[str, np.ndarray],
                   batch: int = 64, progress: Callable[[int, int], None] | None = None
                   ) -> dict[str, np.ndarray]:
    """Run rows of ``inputs`` through ``session`` ``batch`` at a time; outputs concatenated;
    ``progress(done, total)`` after each batch."""
    n = len(next(iter(inputs.values())))
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        out = session.run({k: v[start:start + batch] for k, v in inputs.items()})
        for k, v in out.items():
            chunks.setdefault(k, []).append(v)
        if progress is not None:
            progress(min(n, start + batch), n)
    return {k: np.concatenate(v) for k, v in chunks.items()}
