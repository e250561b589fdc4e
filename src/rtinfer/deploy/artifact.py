"""The on-disk unit: a Triton-compatible model repository entry with rtinfer's manifest.

    <repo>/<name>/config.pbtxt          accepted by Triton's ONNX Runtime backend
    <repo>/<name>/<version>/model.onnx  the model (engine-native files may sit beside it)
    <repo>/<name>/<version>/manifest.json

``manifest.json`` records the format version, the source model's sha256, the recipe that
produced the model, its spec, measured figures with the hardware and library versions they were
measured on, and the sha256 of every file. :func:`load_artifact` refuses an artifact whose files
no longer match those hashes.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rtinfer._hashing import sha256_file
from rtinfer._paths import relative_inside
from rtinfer.deploy.pbtxt import triton_config
from rtinfer.errors import ArtifactError, ArtifactIntegrityError
from rtinfer.hardware import environment
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.spec import ModelSpec

__all__ = ["FORMAT_VERSION", "Artifact", "is_artifact", "is_model_folder", "load_artifact",
           "save_artifact"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.pbtxt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")



@dataclass
class Artifact:
    """A loaded (and verified) version folder: its path, manifest and model."""

    path: Path
    manifest: dict[str, Any]
    model: ImportedModel

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def engine(self) -> str | None:
        """The engine this version was measured fastest on (``save_artifact(engine=)``), where
        ``rtinfer.load`` and ``rtinfer serve`` run it; None when none was recorded."""
        engine = (self.manifest.get("deployment") or {}).get("engine")
        return None if engine is None else str(engine)


def is_artifact(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def is_model_folder(path: Path) -> bool:
    return bool(_versions(path))


def save_artifact(
    model: ImportedModel,
    repo: str | Path,
    name: str,
    version: int | None = None,
    *,
    recipe: Mapping[str, Any] | None = None,
    measurements: Mapping[str, Any] | None = None,
    max_batch_size: int = 32,
    threads: int | None = None,
    instances: int = 1,
    torch_factory: str | None = None,
    torch_kwargs: Mapping[str, Any] | None = None,
    engine: str | None = None,
    task: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
) -> Artifact:
    """Write ``model`` as ``<repo>/<name>/<version>/`` (version: next free number by default).

    The version folder is written under a temporary name and renamed into place, so a reader
    (or a polling server) never sees a half-written version.

    With ``torch_factory`` (``"rtinfer.kits.perception:network"``: a function of rtinfer's own
    that builds the module, called with ``torch_kwargs``), the PyTorch weights are saved too, as
    safetensors (no pickle), so the torch engine can run the artifact's original module.

    ``engine`` records the engine this version was measured fastest on (``deployment.engine``
    in the manifest); ``rtinfer serve`` uses it unless told otherwise. ``task`` records the
    task or kit the version was made from (its name and fingerprint), which ``rtinfer replay``
    checks. ``reference`` names the version of the same model that holds the original this
    one was judged against (``{"version": N, "sha256": ...}``), for the server's guard.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"model name {name!r} must start with a letter or digit and contain only letters, "
            "digits, '_', '.' and '-'"
        )
    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = _versions(model_dir)
    if version is None:
        version = (max(existing) + 1) if existing else 1
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an int >= 1, got {version!r}")
    if version in existing:
        raise ArtifactError(
            f"{model_dir / str(version)} already exists; choose another version or omit it to "
            "take the next free number"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir))
    try:
        files: dict[str, dict[str, Any]] = {}
        for src in model.files:
            dst = staging / src.relative_to(model.path.parent)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            rel = str(dst.relative_to(staging))
            files[rel] = {"sha256": sha256_file(dst), "bytes": dst.stat().st_size}
        model_file = str((staging / model.path.name).relative_to(staging))
        torch_entry = None
        if torch_factory is not None:
            torch_entry = _save_torch(model, staging, torch_factory, torch_kwargs or {})
            files[torch_entry["weights"]] = {
                "sha256": sha256_file(staging / torch_entry["weights"]),
                "bytes": (staging / torch_entry["weights"]).stat().st_size,
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_file": model_file,
            "source": model.source.to_dict(),
            "recipe": dict(recipe or {"format_version": 1, "passes": []}),
            "spec": model.spec.to_dict(),
            "opset": model.opset,
            "measurements": {
                "fidelity": {"export_check": model.export_check} if model.export_check else {},
                **(measurements or {}),
            },
            "environment": environment(),
            "files": files,
        }
        if engine is not None:
            manifest["deployment"] = {"engine": engine, "threads": threads}
        if torch_entry:
            manifest["torch"] = torch_entry
        if task is not None:
            manifest["task"] = dict(task)
        if reference is not None:
            manifest["reference"] = dict(reference)
        (staging / MANIFEST).write_text(
            json.dumps(manifest, indent=2, default=_jsonable, ensure_ascii=False), encoding="utf-8")
        (model_dir / CONFIG).write_text(
            triton_config(name, model.spec, max_batch_size=max_batch_size, threads=threads,
                          instances=instances, model_filename=model.path.name)
        )
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_artifact(model_dir / str(version))


def load_artifact(path: str | Path, *, verify: bool = True,
                  boundary: str | Path | None = None) -> Artifact:
    """Load a version folder, or a model folder's highest version, checking every file hash.

    Every file the manifest names is a relative path without ``..`` whose real path stays in
    the artifact folder, or in ``boundary`` when given (a model repository, whose own links
    may share files between versions).
    """
    from rtinfer.models.onnx_file import load_onnx
    from rtinfer.models.tflite_file import load_tflite

    path = Path(path)
    if not is_artifact(path):
        versions = _versions(path)
        if not versions:
            raise ArtifactError(
                f"'{path}' holds no {MANIFEST} and no numbered version folders; point at "
                "<repo>/<name>/<version> or <repo>/<name>"
            )
        path = path / str(max(versions))
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path / MANIFEST}: {exc}") from exc
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        raise ArtifactError(
            f"{path / MANIFEST} has format_version {fmt!r}; this rtinfer reads version "
            f"{FORMAT_VERSION}. Re-create the artifact with this version of rtinfer"
        )
    bound = Path(boundary) if boundary is not None else path
    if verify:
        _verify_files(path, manifest["files"], bound)
    model_file = relative_inside(path, manifest.get("model_file"), "the manifest's model_file",
                                 bound)
    reader = load_tflite if model_file.suffix.lower() == ".tflite" else load_onnx
    model = reader(model_file, source=Source(**manifest["source"]))
    stored = ModelSpec.from_dict(manifest["spec"])
    if stored != model.spec:
        raise ArtifactIntegrityError(
            f"the spec in {path / MANIFEST} does not match the model file's graph; the manifest "
            "was edited by hand: re-create the artifact"
        )
    model.export_check = manifest["measurements"].get("fidelity", {}).get("export_check", {})
    if "torch" in manifest:
        entry = manifest["torch"]
        model.torch_loader = partial(_load_torch, path, entry, bound)
        model.torch_kwargs = entry.get("call", "kwargs") == "kwargs"
    return Artifact(path=path, manifest=manifest, model=model)


def _save_torch(model: ImportedModel, folder: Path, factory: str,
                kwargs: Mapping[str, Any]) -> dict[str, Any]:
    from rtinfer._deps import require

    module = model.load_torch()
    if module is None:
        raise ArtifactError(f"torch_factory was given but {model.source.description} has no "
                            "PyTorch module to save")
    _factory(factory)  # fail now, not at load time, on a factory outside the allowlist
    st = require("safetensors.torch", "Saving PyTorch weights in an artifact")
    weights = "torch/model.safetensors"
    (folder / "torch").mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    st.save_file(state, str(folder / weights))
    return {"factory": factory, "kwargs": dict(kwargs), "weights": weights,
            "call": "kwargs" if model.torch_kwargs else "args"}


def _factory(spec: str) -> Any:
    """Resolve ``module:function``, only from rtinfer's own modules (nothing else is run)."""
    module, _, func = spec.partition(":")
    if not module.startswith("rtinfer.") or not func:
        raise ArtifactError(
            f"torch factory {spec!r} is not allowed: artifacts may only name a function of "
            "rtinfer's own modules (rtinfer.…:function)"
        )
    return getattr(importlib.import_module(module), func)


def _load_torch(path: Path, entry: Mapping[str, Any], boundary: Path) -> Any:
    from rtinfer._deps import require

    st = require("safetensors.torch", "Loading PyTorch weights from an artifact")
    module = _factory(entry["factory"])(**entry.get("kwargs", {}))
    weights = relative_inside(path, entry.get("weights"), "the manifest's torch weights",
                              boundary)
    module.load_state_dict(st.load_file(str(weights)))
    return module.eval()


def _verify_files(path: Path, files: Mapping[str, Mapping[str, Any]], boundary: Path) -> None:
    for rel, entry in files.items():
        file = relative_inside(path, rel, f"the file listed in {MANIFEST}", boundary)
        if not file.is_file():
            raise ArtifactIntegrityError(
                f"{file} is listed in {MANIFEST} but missing; restore it or re-create the "
                "artifact"
            )
        actual = sha256_file(file)
        if actual != entry["sha256"]:
            raise ArtifactIntegrityError(
                f"{file} does not match {MANIFEST}: sha256 {actual[:12]}… expected "
                f"{entry['sha256'][:12]}…; the file changed after the artifact was written. "
                "Restore the original file or re-create the artifact"
            )


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a manifest")
