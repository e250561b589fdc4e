"""One served model version: its sessions (one per instance), its batcher and its metadata.

    served = load_version(Path("repo/cnn"), 2, read_model_config(Path("repo/cnn")))
    outputs = await served.batcher.submit(feeds)

A version folder is either rtinfer's artifact (``manifest.json``, every file's hash checked) or
a plain Triton version folder holding ``model.onnx`` (or the config's
``default_model_filename``). Each instance is loaded and warmed up before the version is
returned, so it never receives traffic cold.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtinfer._paths import files_inside, relative_inside
from rtinfer.deploy.artifact import is_artifact, load_artifact
from rtinfer.deploy.settings import ModelConfig
from rtinfer.engines import Session, deployed_engine, load
from rtinfer.errors import RtinferError, UnsafePathError
from rtinfer.models import import_model
from rtinfer.serve.batcher import Batcher, BatchObserver
from rtinfer.serve.raw import RawInputs, raw_inputs_for, raw_inputs_from

if TYPE_CHECKING:
    from rtinfer.serve.guard import Guard

__all__ = ["ServedModel", "load_version", "snapshot"]

_LOG = logging.getLogger("rtinfer.serve")


@dataclass
class ServedModel:
    """A loaded, warmed model version ready for traffic."""

    name: str
    version: str
    sessions: list[Session]
    config: ModelConfig
    batcher: Batcher
    load_seconds: float = 0.0
    files: tuple[Any, ...] = ()          # the version folder's snapshot when it was loaded
    raw: RawInputs | None = None         # a kit's raw inputs, when deployed from a kit
    guard: Guard | None = None           # its online accuracy guard (rtinfer.serve.guard)

    @property
    def session(self) -> Session:
        return self.sessions[0]

    @property
    def batchable(self) -> bool:
        """Every input and output has a leading batch dimension to concatenate along."""
        spec = self.session.spec
        return all(t.shape and not isinstance(t.shape[0], int)
                   for t in (*spec.inputs, *spec.outputs))

    def metadata(self, versions: list[str] | None = None) -> dict[str, Any]:
        """The Open Inference Protocol's model metadata (-1 for a variable dimension)."""
        def tensor(t: Any) -> dict[str, Any]:
            return {"name": t.name, "datatype": t.kserve_datatype,
                    "shape": [d if isinstance(d, int) else -1 for d in t.shape]}

        platform = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino",
                    "torch": "pytorch_libtorch"}.get(self.session.engine, self.session.engine)
        meta = {"name": self.name, "versions": versions or [self.version], "platform": platform,
                "inputs": [tensor(t) for t in self.session.spec.inputs],
                "outputs": [tensor(t) for t in self.session.spec.outputs]}
        if self.raw is not None:  # an extra key: clients that do not know it ignore it
            meta["raw_inputs"] = self.raw.metadata()
        return meta

    def close(self) -> None:
        for session in self.sessions:
            session.close()


def snapshot(folder: Path, root: Path | None = None) -> tuple[Any, ...]:
    """What a version folder holds (relative path, size, mtime) — a change means reload.
    A link out of ``root`` (default: the repository above the model folder) is recorded as
    refused, never followed."""
    if not folder.is_dir():
        return ()
    try:
        files = files_inside(root or folder.parent.parent, folder)
    except UnsafePathError as exc:
        return (("refused", str(exc)),)
    return _stats(folder, files)


def _stats(folder: Path, files: list[Path]) -> tuple[Any, ...]:
    out = []
    for p in files:
        with contextlib.suppress(OSError):  # a dangling link: nothing to load, nothing to see
            st = p.stat()
            out.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _model_file(folder: Path, config: ModelConfig, root: Path) -> Path:
    """A plain version folder's model: the config's ``default_model_filename``; without one,
    ``model.onnx``, ``model.tflite``, Triton's ``model.savedmodel`` folder, or the version
    folder itself when it is a SavedModel (TF Serving's ``<model>/<version>/saved_model.pb``,
    converted once at load and cached by content)."""
    names = [config.model_filename]
    if config.model_filename == ModelConfig.model_filename:  # the default: none was given
        names += ["model.tflite", "model.savedmodel"]
    for name in names:
        found = folder / name
        if found.is_dir() if name.endswith(".savedmodel") else found.is_file():
            return relative_inside(folder, name, "default_model_filename", root)
    if (folder / "saved_model.pb").is_file():
        return folder
    raise RtinferError(f"{folder} holds neither rtinfer's manifest.json, {' nor '.join(names)} "
                       "nor a SavedModel (saved_model.pb); put the model there")


def load_version(model_dir: Path, version: int, config: ModelConfig,
                 observer: BatchObserver | None = None, root: Path | None = None
                 ) -> ServedModel:
    """Load ``<model_dir>/<version>/`` with ``config``: every instance loaded and warmed up.

    Nothing outside ``root`` (the repository; default: the folder above ``model_dir``) is
    opened: a version folder or file linking out of it raises UnsafePathError first.
    """
    folder = model_dir / str(version)
    root = root or model_dir.parent
    files = _stats(folder, files_inside(root, folder))  # raises before anything is read
    start = time.perf_counter()
    deployed = None  # the engine the artifact was measured fastest on (save_artifact(engine=))
    if is_artifact(folder):
        artifact = load_artifact(folder, boundary=root)
        model = artifact.model
        deployed = deployed_engine(artifact)
    else:
        model = import_model(_model_file(folder, config, root))
    raw = (raw_inputs_for(config.kit, config.kit_size) if config.kit else
           raw_inputs_from(config.raw, config.name, model_dir, root) if config.raw else None)
    sessions = [load(model, config.engine or deployed, config.thread_budget, warmup=True)
                for _ in range(config.instances)]
    served = ServedModel(config.name, str(version), sessions, config,
                         Batcher(sessions, config.batching(), observer),
                         load_seconds=time.perf_counter() - start, files=files, raw=raw)
    if served.batcher.config.max_batch_size > 1 and not served.batchable:
        _LOG.warning("%s: inputs/outputs have no batch axis; dynamic batching is off",
                     config.name)
        served.batcher.config = replace(served.batcher.config, max_batch_size=1)
    _LOG.info("loaded %s version %s on %s (%d instance(s) x %d thread(s)) in %.2f s",
              config.name, version, sessions[0].engine, config.instances,
              config.thread_budget, served.load_seconds)
    return served
