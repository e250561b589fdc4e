"""A model repository on disk, served: versions by policy, hot reload, explicit load/unload.

    repo = load_repository("repo", overrides={"max_batch_size": 8})   # everything loaded, warm
    served = repo.resolve("cnn")          # the highest ready version ("cnn", "2") for a version
    await repo.poll()                     # pick up new, changed or removed versions
    await repo.load_model("cnn"); await repo.unload_model("cnn")

Reload never interrupts traffic: a new (or changed) version is loaded and warmed in a worker
thread while the current versions keep serving; only then is it swapped in, and the versions it
replaces drain their queues before they are closed. A version that fails to load leaves the
served ones in place, and :meth:`ModelRepository.index` reports why (``UNAVAILABLE`` + reason).
A failed version is retried only when its files change. The server is ready when every model not
explicitly unloaded has a ready version.

A model whose settings hold a ``guard`` (:mod:`rtinfer.serve.guard`) also loads, beside the
versions its policy names, the reference version each of them is guarded against (the
``reference`` its manifest names, or the guard's own); the reference answers a request only
when the guard has rolled back, or when it is asked for by number.

The repository's real path is the boundary of every file the server opens: a model name is one
plain folder name (``..``, ``.``, separators and hidden names are refused with the reason), and a
model folder, version folder or file that is a symlink resolving outside the repository is
refused (the version is reported ``UNAVAILABLE`` with the reason and never opened).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rtinfer._paths import check_name, contained
from rtinfer.deploy.settings import ModelConfig, read_model_config
from rtinfer.errors import ModelNotFoundError, RtinferError, UnsafePathError
from rtinfer.serve.batcher import BatchObserver
from rtinfer.serve.guard import Guard, GuardObserver
from rtinfer.serve.memory import release_freed_memory
from rtinfer.serve.model import ServedModel, load_version, snapshot

__all__ = ["ModelRepository", "VersionState", "load_repository"]

_LOG = logging.getLogger("rtinfer.serve")

#: Makes a batch observer for (model, version): how the metrics see each batch.
ObserverFactory = Callable[[str, str], BatchObserver | None]
#: Makes a guard observer for (model, version): how the metrics see a guard.
GuardObserverFactory = Callable[[str, str], GuardObserver | None]


@dataclass
class VersionState:
    state: str           # READY, UNAVAILABLE (LOADING while a load runs)
    reason: str = ""


class ModelRepository:
    """The models of one repository folder (or fixed models) and the state of each version."""

    def __init__(self, path: Path | None, overrides: dict[str, Any] | None = None,
                 drain_timeout_s: float = 30.0, workers: int = 1, cores: int | None = None
                 ) -> None:
        # A TF Serving model base path (<base>/<version>/saved_model.pb) is served as it is:
        # one model, named after the folder, the base path itself the boundary.
        self.single = path.name if path is not None and is_base_path(path) else None
        self.path = path.parent if self.single and path is not None else path
        self.root = Path(os.path.realpath(path)) if path is not None else None  # the boundary
        self.overrides = dict(overrides or {})
        self.drain_timeout_s = drain_timeout_s
        self.workers = workers  # server processes sharing the cores: sizes default threads
        self.cores = cores      # the cores they share (a Ray replica's CPUs); None: usable
        self.served: dict[str, dict[int, ServedModel]] = {}
        self.states: dict[str, dict[int, VersionState]] = {}
        self.unloaded: set[str] = set()
        self.observer_factory: ObserverFactory = lambda name, version: None
        self.guard_observer_factory: GuardObserverFactory = lambda name, version: None
        self.routed: dict[str, set[int]] = {}   # versions the policy serves (not references)
        self.guard_off: dict[tuple[str, int], str] = {}  # why a guarded version has none
        self.on_load: Callable[[ServedModel], None] = lambda served: None
        self._configs: dict[str, tuple[Any, ...]] = {}
        self._failed: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._lock: asyncio.Lock | None = None

    # -- reading ---------------------------------------------------------------------------

    def resolve(self, name: str, version: str | None = None) -> ServedModel:
        """The served version (highest ready one by default); raises ModelNotFoundError."""
        versions = self.served.get(name)
        if not versions:
            known = sorted(set(self.states) - self.unloaded)
            if name in self.states:
                raise ModelNotFoundError(f"model '{name}' is not ready: {self._why(name)}")
            raise ModelNotFoundError(f"unknown model '{name}'; this server has {known}")
        if version is None:
            routed = self.routed.get(name)  # (every request: no sets built here)
            default = max((v for v in versions if routed is None or v in routed), default=None)
            if default is None:  # only a guard's reference is loaded: it is no default
                raise ModelNotFoundError(f"model '{name}' is not ready: {self._why(name)}")
            served = versions[default]
        elif not _is_number(version) or int(version) not in versions:
            raise ModelNotFoundError(f"model '{name}' has no ready version {version}; it "
                                     f"serves versions {sorted(versions)}")
        else:
            served = versions[int(version)]
        return served.guard.route(served) if served.guard is not None else served

    def guards(self, name: str) -> list[Guard]:
        """The guards of ``name``'s served versions."""
        return [m.guard for m in self.served.get(name, {}).values() if m.guard is not None]

    async def reset_guard(self, name: str) -> int:
        """Switch every guarded version of ``name`` back on (after a rollback); returns how
        many guards were reset. ModelNotFoundError for a model without a guard."""
        guards = self.guards(name)
        if not guards:
            self.resolve(name)  # unknown or not ready: that error
            raise ModelNotFoundError(f"model '{name}' has no guard: give it a guard in its "
                                     "rtinfer.json or with rtinfer serve --guard")
        for guard in guards:
            guard.reset()
        return len(guards)

    def ready(self) -> bool:
        return all(self.served.get(name) and (name not in self.routed or self.routed[name])
                   for name in self.states if name not in self.unloaded)

    def models(self) -> list[ServedModel]:
        return [m for versions in self.served.values() for m in versions.values()]

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: every model version with its state and reason."""
        out = []
        for name in sorted(self.states):
            states = self.states[name] or {0: VersionState("UNAVAILABLE", self._why(name))}
            served = self.served.get(name, {})
            for version, st in sorted(states.items()):
                entry: dict[str, Any] = {"name": name, "state": st.state, "reason": st.reason}
                if version:
                    entry["version"] = str(version)
                guard = served[version].guard if version in served else None
                if guard is not None:
                    entry["guard"] = guard.status()
                    entry["reason"] = entry["reason"] or guard.reason
                elif (name, version) in self.guard_off:
                    entry["guard"] = {"state": "off", "reason": self.guard_off[(name, version)]}
                elif version in served and version not in self.routed.get(name, {version}):
                    entry["reason"] = entry["reason"] or "loaded as the guard's reference"
                out.append(entry)
        return out

    def configs(self) -> dict[str, ModelConfig]:
        """Each model folder's layered config, read without loading anything (folders whose
        config is invalid are left out: loading reports them)."""
        out = {}
        for name in self._model_names():
            try:
                out[name] = self._config(name)
            except (RtinferError, ValueError, TypeError):
                continue
        return out

    def require(self, name: str, action: str) -> None:
        """Raise ModelNotFoundError unless ``name`` can be loaded (``action`` "load": its
        folder exists inside the repository) or unloaded ("unload": the server knows it);
        InvalidInputError for a name that is no plain folder name, UnsafePathError for a
        folder that resolves outside the repository."""
        check_name(name)
        if action == "load":
            if self.path is None or not (self.path / name).is_dir() or (
                    self.single is not None and name != self.single):
                raise ModelNotFoundError(f"model '{name}' is not in the repository {self.root}")
            self.folder(name)
        if action == "unload" and name not in self.states:
            raise ModelNotFoundError(f"unknown model '{name}'")

    def folder(self, name: str) -> Path:
        """``<repo>/<name>``, checked: a plain name whose real path is inside the repository."""
        assert self.path is not None and self.root is not None
        check_name(name)
        if self.single is not None and name != self.single:
            raise ModelNotFoundError(f"model '{name}' is not served here: this server serves "
                                     f"the one model '{self.single}' (a TF Serving base path)")
        folder = self.path / name
        contained(self.root, folder)
        return folder

    def _why(self, name: str) -> str:
        if name in self.unloaded:
            return "unloaded"
        reasons = [s.reason for s in self.states.get(name, {}).values() if s.reason]
        return "; ".join(reasons) or "no version is loaded"

    # -- loading ---------------------------------------------------------------------------

    def load_all(self) -> None:
        """Load every model of the repository now (startup; before the event loop runs)."""
        assert self.path is not None
        for name in self._model_names():
            self._install(name, *self._prepare(name))
        if not self.states:
            raise RtinferError(f"model repository '{self.path}' holds no models "
                               "(<name>/<version>/)")

    async def load_model(self, name: str) -> None:
        """(Re)load ``name`` from disk; raises RtinferError naming why when nothing serves."""
        self.require(name, "load")
        async with self._repo_lock():
            self.unloaded.discard(name)
            self.states.setdefault(name, {})
            retired = self._install(name, *await asyncio.to_thread(self._prepare, name))
        await self._retire(retired)
        if not self.served.get(name):
            raise RtinferError(f"failed to load model '{name}': {self._why(name)}")

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name``: queued and running requests finish first."""
        self.require(name, "unload")
        async with self._repo_lock():
            retired = list(self.served.pop(name, {}).values())
            self.states[name] = {}
            self.unloaded.add(name)
        await self._retire(retired)

    async def poll(self) -> None:
        """One scan of the repository: load what is new or changed, retire what is gone."""
        if self.path is None:
            return
        names = set(self._model_names())
        for name in sorted(names - self.unloaded):
            if self._changed(name):
                async with self._repo_lock():
                    retired = self._install(name, *await asyncio.to_thread(self._prepare, name))
                await self._retire(retired)
        for name in sorted(set(self.states) - names - self.unloaded):  # folder removed
            await self.unload_model(name)
            self.unloaded.discard(name)
            self.states.pop(name, None)

    async def close(self) -> None:
        """Drain every model (server shutdown)."""
        retired = self.models()
        self.served.clear()
        await self._retire(retired)

    def _repo_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _model_names(self) -> list[str]:
        assert self.path is not None
        if self.single is not None:
            return [self.single]
        if not self.path.is_dir():
            raise RtinferError(f"model repository '{self.path}' is not a folder")
        names = []
        for p in self.path.iterdir():
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                self.folder(p.name)
            except (UnsafePathError, ValueError):
                # Listed, so that the index says why it is refused; never read.
                _LOG.warning("model folder %r is refused: it is a link out of the repository "
                             "or not a plain name", p.name)
                names.append(p.name)
                continue
            if (any(_is_number(v.name) for v in p.iterdir() if v.is_dir())
                    or (p / "config.pbtxt").is_file()):
                names.append(p.name)
        return sorted(names)

    def _config_snapshot(self, name: str) -> tuple[Any, ...]:
        try:
            folder = self.folder(name)
        except (UnsafePathError, ValueError) as exc:
            return (("refused", str(exc)),)
        return tuple((f, (folder / f).stat().st_mtime_ns) for f in ("config.pbtxt", "rtinfer.json")
                     if (folder / f).is_file())

    def _changed(self, name: str) -> bool:
        assert self.path is not None
        if self._configs.get(name) != self._config_snapshot(name):
            return True
        try:
            folder = self.folder(name)
            policy = self._config(name).version_policy
        except (RtinferError, ValueError, TypeError):
            return False  # reported when the config changed; nothing new to try
        wanted = policy.select(_numbered(folder))
        wanted = sorted(set(wanted) | set(self._references(name, wanted)[0].values()))
        served = self.served.get(name, {})
        for v in wanted:
            files = snapshot(folder / str(v), self.root)
            if (v in served and served[v].files == files) or self._failed.get((name, v)) == files:
                continue
            return True
        return set(served) != set(wanted) and not any((name, v) in self._failed for v in wanted)

    def _prepare(self, name: str) -> tuple[ModelConfig | None, dict[int, ServedModel],
                                          dict[int, str], dict[int, int]]:
        """Load (in a worker thread) the versions the policy wants that are new or changed,
        and the references their guards need; the last item maps guarded to reference."""
        self._configs[name] = self._config_snapshot(name)
        try:
            folder = self.folder(name)
        except (UnsafePathError, ValueError) as exc:
            return None, {}, {0: f"refused: {exc}"}, {}
        try:
            config = self._config(name)
        except (RtinferError, ValueError, TypeError) as exc:  # int("x") from a hand-edited file
            return None, {}, {0: f"invalid configuration: {exc}"}, {}
        served = self.served.get(name, {})
        config_same = all(m.config == config for m in served.values())
        loaded: dict[int, ServedModel] = {}
        failed: dict[int, str] = {}
        wanted = config.version_policy.select(_numbered(folder))
        if not wanted:
            failed[0] = f"no version folder matches the version policy " \
                        f"{config.version_policy.describe()}"
        refs, off = self._references(name, wanted)
        for v, why in off.items():
            self.guard_off[(name, v)] = why
        for v in sorted(set(wanted) | set(refs.values())):
            files = snapshot(folder / str(v), self.root)
            if config_same and v in served and served[v].files == files:
                continue
            if self._failed.get((name, v)) == files and config_same:
                failed[v] = self.states.get(name, {}).get(v, VersionState("", "")).reason
                continue
            try:
                loaded[v] = load_version(folder, v, config,
                                         self.observer_factory(name, str(v)), root=self.root)
            except Exception as exc:  # any failure to load is reported, never fatal
                _LOG.warning("model %s version %s failed to load: %s", name, v, exc)
                self._failed[(name, v)] = files
                failed[v] = f"version {v} failed to load: {exc}"
        return config, loaded, failed, refs

    def _references(self, name: str, versions: list[int]
                    ) -> tuple[dict[int, int], dict[int, str]]:
        """For a model with a guard: each version's reference version (the guard's own, else
        the one its manifest names), and why a version has none. Nothing without a guard."""
        try:
            config = self._config(name)
            folder = self.folder(name)
        except (RtinferError, ValueError, TypeError):
            return {}, {}
        if config.guard is None:
            return {}, {}
        available = set(_numbered(folder))
        refs: dict[int, int] = {}
        off: dict[int, str] = {}
        for v in versions:
            ref = config.guard.reference or _manifest_reference(self.root, folder / str(v))
            if ref is None:
                off[v] = (f"version {v} names no reference (the original it was judged "
                          "against): it is the original, or set guard.reference")
            elif ref == v:
                off[v] = f"version {v} is its own reference"
            elif ref not in available:
                off[v] = f"its reference, version {ref}, is not in the repository"
            else:
                refs[v] = ref
        return refs, off

    def _config(self, name: str) -> ModelConfig:
        return replace(read_model_config(self.folder(name), self.overrides),
                       workers=self.workers, cores=self.cores)

    def _install(self, name: str, config: ModelConfig | None, loaded: dict[int, ServedModel],
                 failed: dict[int, str], refs: dict[int, int] | None = None
                 ) -> list[ServedModel]:
        """Swap loaded versions in (event loop side); return the versions to retire."""
        refs = refs or {}
        current = dict(self.served.get(name, {}))
        states = {v: st for v, st in self.states.get(name, {}).items() if v in current}
        for v, served in loaded.items():
            self._failed.pop((name, v), None)
            self.on_load(served)
        new = {**current, **loaded}
        if config is not None:
            # The policy chooses among what loaded (a corrupt new version leaves the old one
            # serving), except the versions loaded only as a guard's reference: one of those
            # never becomes the default because the version it guards failed to load.
            if self.path is not None:
                refs = {**self._references(name, sorted(new))[0], **refs}
                on_disk = set(config.version_policy.select(_numbered(self.folder(name))))
            else:
                on_disk = set(new)
            # (A version that was already serving keeps serving until its successor loads.)
            reference_only = set(refs.values()) - on_disk - self.routed.get(name, set())
            routed = set(config.version_policy.select(
                [v for v in new if v not in reference_only]))
            if not failed:
                keep = routed | {refs[v] for v in routed if v in refs}
                new = {v: m for v, m in new.items() if v in keep or v in loaded}
            self.routed[name] = routed & set(new)
            self._attach_guards(name, config, new, refs)
        # An invalid config changes nothing that serves: versions, routing and guards stay.
        retired = [m for v, m in current.items() if new.get(v) is not m]
        for v in set(current) - set(new):
            states.pop(v, None)
        for v in new:
            states[v] = VersionState("READY")
        for v, reason in failed.items():
            states[v] = VersionState("UNAVAILABLE", reason)
        self.served[name] = new
        self.states[name] = states
        if not new:
            self.served.pop(name)
        return retired

    def _attach_guards(self, name: str, config: ModelConfig | None,
                       versions: dict[int, ServedModel], refs: dict[int, int]) -> None:
        """Give each routed version the guard its settings ask for, against its reference."""
        guard_cfg = config.guard if config is not None else None
        # A reloaded version (same files, same guard settings) keeps its guard's verdict.
        before = {(g.primary.version, g.primary.files, g.config): g
                  for m in self.served.get(name, {}).values() if (g := m.guard) is not None}
        for v, served in versions.items():
            old = served.guard
            reference = versions.get(refs.get(v, -1))
            if guard_cfg is None or v not in self.routed[name] or reference is None:
                served.guard = None
                if guard_cfg is not None and v in self.routed[name] and v in refs:
                    self.guard_off[(name, v)] = f"its reference, version {refs[v]}, did not load"
                elif guard_cfg is None:
                    self.guard_off.pop((name, v), None)
            elif old is None or old.reference is not reference or old.config != guard_cfg:
                try:
                    served.guard = Guard(guard_cfg, served, reference,
                                         self.guard_observer_factory(name, str(v)),
                                         self._capture_dir(name, v, guard_cfg.capture))
                except (ValueError, UnsafePathError) as exc:  # e.g. no such output
                    served.guard = None
                    self.guard_off[(name, v)] = str(exc)
                else:
                    self.guard_off.pop((name, v), None)
                    earlier = before.get((served.version, served.files, guard_cfg))
                    if earlier is not None and earlier is not served.guard:
                        served.guard.inherit(earlier)
            if old is not None and old is not served.guard:
                old.stop()

    def _capture_dir(self, name: str, version: int, capture: str | None) -> Path | None:
        """Where a guard writes disagreeing inputs: ``<capture>/<version>/`` inside the model
        folder for a relative path (rtinfer.json may name no other), ``<capture>/<name>/
        <version>/`` for the command line's absolute one. Its real path must stay out of
        every version folder, and a relative one inside the model folder (links included):
        UnsafePathError otherwise."""
        if capture is None:
            return None
        base = Path(capture)
        model_dir = self.folder(name)
        folder = base / name / str(version) if base.is_absolute() else \
            model_dir / base / str(version)
        real = Path(os.path.realpath(folder))
        if not base.is_absolute():
            contained(model_dir, folder)
        if self.root is not None and (real == self.root or self.root in real.parents):
            inside = real.relative_to(self.root).parts
            if len(inside) < 2 or _is_number(inside[1]):
                raise UnsafePathError(f"guard.capture {capture!r} would write into the "
                                      "repository's model or version folders; give a folder "
                                      "of its own")
        return folder

    async def _retire(self, retired: list[ServedModel]) -> None:
        for served in retired:  # first: no guard samples into a reference about to close
            if served.guard is not None:
                served.guard.stop()
        for served in retired:
            await served.batcher.drain(self.drain_timeout_s)
            served.close()
            _LOG.info("retired %s version %s", served.name, served.version)
        if retired:  # the sessions freed their memory on close: hand it back to the OS
            await asyncio.to_thread(release_freed_memory)


def _manifest_reference(root: Path | None, version_dir: Path) -> int | None:
    """The reference version an artifact's manifest names (``rtinfer`` writers record the
    original they judged a version against), read only inside the repository."""
    path = version_dir / "manifest.json"
    try:
        if root is not None:
            contained(root, path)
        ref = json.loads(path.read_text()).get("reference") or {}
    except (OSError, ValueError, UnsafePathError, AttributeError):
        return None
    version = ref.get("version") if isinstance(ref, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def is_base_path(folder: Path) -> bool:
    """A TF Serving model base path: numbered version folders holding SavedModels, and no
    config.pbtxt (a Triton model folder is served from its repository)."""
    if not folder.is_dir() or (folder / "config.pbtxt").is_file():
        return False
    return any((folder / str(v) / "saved_model.pb").is_file() for v in _numbered(folder))


def _numbered(folder: Path) -> list[int]:
    if not folder.is_dir():  # removed meanwhile: no versions (the next poll retires them)
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and _is_number(p.name))


def _is_number(text: str) -> bool:
    """A version number as folders and URLs spell it: ASCII digits ("²".isdigit() is True,
    and int() refuses it), short enough to be an int without Python's digit limit."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def load_repository(repo: str | Path, *, engine: str | None = None, threads: int | None = None,
                    overrides: dict[str, Any] | None = None, drain_timeout_s: float = 30.0,
                    workers: int = 1, cores: int | None = None) -> ModelRepository:
    """Every model of ``repo`` at the versions its policy names, loaded and warmed up.

    ``overrides`` (e.g. ``{"max_batch_size": 8, "instances": 2}``) win over each model's
    ``config.pbtxt`` and ``rtinfer.json``; ``engine`` and ``threads`` are shorthands for two
    of them. ``workers``: how many server processes each load the repository (default threads
    share the cores among them all); ``cores``: how many cores they share (default: the cores
    this process may run on; a Ray replica passes the CPUs Ray reserved for it).
    """
    settings = {"engine": engine, "threads": threads, **(overrides or {})}
    repository = ModelRepository(Path(repo), settings, drain_timeout_s, workers, cores)
    repository.load_all()
    return repository
