"""One model's serving settings, layered: command line > ``rtinfer.json`` > ``config.pbtxt``.

A model folder of a repository may hold Triton's ``config.pbtxt`` (rtinfer writes one with every
artifact; an existing Triton repository has its own) and rtinfer's ``rtinfer.json``::

    {"engine": "openvino", "threads": 1, "instances": 2, "max_queue_delay_us": 500,
     "version_policy": {"latest": 2}, "length_buckets": [16, 32, 64, 128], "kit": "intent"}

(a task's model records its pre-processing as ``"raw"`` instead of ``"kit"``:
:func:`rtinfer.serve.raw.raw_inputs_from`), and the online accuracy guard as ``"guard":
{"sample": 0.02, "threshold": 0.98, "action": "rollback"}`` (:class:`GuardConfig`).

From ``config.pbtxt`` these are honoured: ``max_batch_size``, ``dynamic_batching {
preferred_batch_size, max_queue_delay_microseconds, default_queue_policy { max_queue_size,
default_timeout_microseconds } }``, ``instance_group [{ count }]``, ``version_policy { latest {
num_versions } | specific { versions } | all {} }``, ``default_model_filename`` and the ONNX
Runtime backend's ``intra_op_thread_count`` parameter. As in Triton, a model without a
``dynamic_batching`` block runs each request on its own.

The engine, when neither the command line nor ``rtinfer.json`` names one, is each version's
own: the ``deployment.engine`` its artifact manifest records (``rtinfer quantize`` and
``optimize`` write the engine they measured), else ONNX Runtime.

Threads default so that intra-op threads x instances x worker processes (``rtinfer serve
--workers``) <= the usable cores: an oversubscribed CPU is the first reason users find a server
slower than the bare runtime. An explicit thread count is honoured; :meth:`ModelConfig.
oversubscription` says when it does not fit.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rtinfer._paths import check_name
from rtinfer.deploy.pbtxt import first, parse
from rtinfer.errors import ConfigError, InvalidInputError
from rtinfer.hardware import usable_cores

__all__ = ["BatchingConfig", "GuardConfig", "ModelConfig", "VersionPolicy", "merge_settings",
           "read_model_config", "write_settings"]

RTINFER_CONFIG = "rtinfer.json"
_OVERRIDABLE = ("engine", "threads", "instances", "max_batch_size", "preferred_batch_size",
                "max_queue_delay_us", "max_queue_size", "default_timeout_us", "version_policy",
                "length_buckets", "kit", "kit_size", "raw", "guard")

GUARD_METRICS = ("top1_agreement", "cosine")
GUARD_ACTIONS = ("alert", "rollback")


@dataclass(frozen=True)
class GuardConfig:
    """The online accuracy guard of a model (:mod:`rtinfer.serve.guard`): a ``sample`` share of
    live requests also runs on the ``reference`` version (default: the one the served
    version's manifest names, the original it was judged against), off the request's path;
    the mean per-sample ``metric`` over the last ``window`` samples below ``threshold`` raises
    an ``alert`` or rolls traffic back to the reference (``rollback``)."""

    sample: float = 0.02
    metric: str = "top1_agreement"         # or "cosine" (the compared output's, per row)
    threshold: float = 0.98
    window: int = 500
    action: str = "alert"
    reference: int | None = None           # a version of the same model; None: the manifest's
    output: str | None = None              # the output compared; None: the model's first
    hysteresis: float = 0.01               # an alert clears at threshold + hysteresis
    min_samples: int | None = None         # samples before a verdict; None: the whole window
    queue: int = 16                        # samples waiting for the reference; more are dropped
    capture: str | None = None             # folder for disagreeing inputs (.npz); off: None
    capture_max: int = 1000                # files written at most, per served version

    def __post_init__(self) -> None:
        def bad(why: str) -> ConfigError:
            return ConfigError(f"guard: {why}")

        if isinstance(self.sample, bool) or not isinstance(self.sample, int | float) or \
                not 0 < self.sample <= 1:
            raise bad(f"sample must be a share in (0, 1], got {self.sample!r}")
        if self.metric not in GUARD_METRICS:
            raise bad(f"metric must be one of {list(GUARD_METRICS)}, got {self.metric!r}")
        if self.action not in GUARD_ACTIONS:
            raise bad(f"action must be one of {list(GUARD_ACTIONS)}, got {self.action!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) or \
                not -1 <= self.threshold <= 1:
            raise bad(f"threshold must be a number in [-1, 1], got {self.threshold!r}")
        for key in ("window", "queue", "capture_max"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(f"{key} must be a whole number >= 1, got {value!r}")
        if self.min_samples is not None and (
                isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int)
                or not 1 <= self.min_samples <= self.window):
            raise bad(f"min_samples must be a whole number in [1, window], got "
                      f"{self.min_samples!r}")
        if self.reference is not None and (isinstance(self.reference, bool) or not isinstance(
                self.reference, int) or self.reference < 1):
            raise bad(f"reference must be a version number >= 1, got {self.reference!r}")
        if not isinstance(self.hysteresis, int | float) or self.hysteresis < 0:
            raise bad(f"hysteresis must be >= 0, got {self.hysteresis!r}")
        for key in ("output", "capture"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad(f"{key} must be a name (text), got {value!r}")

    @property
    def verdict_after(self) -> int:
        return self.min_samples or self.window

    @classmethod
    def parse(cls, value: Any) -> GuardConfig | None:
        """From a dict (``rtinfer.json``'s ``"guard"``), the command line's
        ``sample=0.02,metric=top1_agreement,threshold=0.98,window=500,action=rollback``, or
        ``off`` / None (no guard)."""
        if value is None or isinstance(value, GuardConfig):
            return value
        if isinstance(value, str):
            if value.strip().lower() in ("", "off", "none"):
                return None
            items: dict[str, Any] = {}
            for part in value.split(","):
                key, eq, text = part.partition("=")
                if not eq:
                    raise ConfigError(f"guard: expected key=value, got {part!r} (e.g. "
                                      "sample=0.02,threshold=0.98,action=rollback)")
                key = key.strip()
                # Names and folders stay text ("output=745" names an output, not a number).
                items[key] = text.strip() if key in ("output", "capture") else \
                    _guard_value(text.strip())
            value = items
        if not isinstance(value, Mapping):
            raise ConfigError(f"guard must be an object of settings or 'k=v,...', got "
                              f"{type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"guard: unknown setting(s) {unknown}; settings are "
                              f"{sorted(known)}")
        args = dict(value)
        if isinstance(args.get("sample"), int) and not isinstance(args["sample"], bool):
            args["sample"] = float(args["sample"])
        return cls(**args)


def _guard_value(text: str) -> Any:
    """A command-line guard value: a number where it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return None if text.lower() == "none" else text


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 8
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 256
    default_timeout_us: int = 0  # 0: no timeout
    length_buckets: tuple[int, ...] = ()  # pad axis 1 of 2-D inputs up to one of these

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0 or self.max_queue_size < 1:
            raise ValueError("max_queue_delay_us must be >= 0 and max_queue_size >= 1")
        if any(b < 1 for b in self.length_buckets):
            raise ValueError(f"length_buckets must be lengths >= 1, got {self.length_buckets}")
        # Ascending once here, not on every request (rtinfer._buckets.bucket_for).
        object.__setattr__(self, "length_buckets", tuple(sorted(self.length_buckets)))


@dataclass(frozen=True)
class VersionPolicy:
    """Which numbered versions to serve: the ``latest`` N, a ``specific`` set, or ``all``."""

    latest: int | None = 1
    specific: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> VersionPolicy:
        """From ``{"latest": 2}``, ``{"specific": [1, 3]}``, ``"all"`` or ``"latest:2"``."""
        if isinstance(value, VersionPolicy):
            return value
        if value == "all" or (isinstance(value, dict) and "all" in value):
            return cls(latest=None)
        if isinstance(value, str) and value.startswith("latest:") and value[7:].isdigit():
            value = {"latest": int(value[7:])}
        if isinstance(value, str) and value.startswith("specific:"):
            value = {"specific": value[9:].split(",")}
        if isinstance(value, dict) and "latest" in value:
            n = value["latest"]
            if isinstance(n, dict):  # config.pbtxt's latest { num_versions: N }
                n = n.get("num_versions", 1)
            if not isinstance(n, int) or n < 1:
                raise ConfigError(f"version_policy latest must be a number >= 1, got {n!r}")
            return cls(latest=n)
        if isinstance(value, dict) and "specific" in value:
            versions = value["specific"]
            if isinstance(versions, dict):  # config.pbtxt's specific { versions: [...] }
                versions = versions.get("versions", [])
            try:
                chosen = tuple(sorted(int(v) for v in versions))
            except (TypeError, ValueError):
                chosen = ()
            if not chosen or min(chosen) < 1:
                raise ConfigError(f"version_policy specific needs version numbers >= 1, got "
                                  f"{versions!r}")
            return cls(latest=None, specific=chosen)
        raise ConfigError(f"version_policy {value!r} is not understood; use latest:N, "
                          "specific:1,3 or all")

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among ``available`` (ascending)."""
        ordered = sorted(available)
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered if self.latest is None else ordered[-self.latest:]

    def describe(self) -> str:
        if self.specific:
            return "specific:" + ",".join(map(str, self.specific))
        return "all" if self.latest is None else f"latest:{self.latest}"


@dataclass(frozen=True)
class ModelConfig:
    """Everything the server needs to know to serve one model folder."""

    name: str
    engine: str | None = None
    threads: int | None = None            # None: cores // (instances x workers)
    instances: int = 1
    workers: int = 1                      # server processes sharing the cores (not a file key)
    cores: int | None = None              # the cores they share (not a file key); None: usable
    max_batch_size: int = 0               # 0: the model does not batch
    dynamic_batching: bool = False
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 256
    default_timeout_us: int = 0
    version_policy: VersionPolicy = VersionPolicy()
    model_filename: str = "model.onnx"
    length_buckets: tuple[int, ...] = ()
    kit: str | None = None                # accept this kit's raw inputs (rtinfer.serve.raw)
    kit_size: str = "full"
    # A task's pre-processing (rtinfer.serve.raw.raw_inputs_from), as rtinfer.json records it.
    raw: Mapping[str, Any] | None = field(default=None, hash=False)
    guard: GuardConfig | None = None      # the online accuracy guard (rtinfer.serve.guard)

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ConfigError(f"model '{self.name}': instances must be >= 1, got "
                              f"{self.instances}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"model '{self.name}': threads must be >= 1, got {self.threads}")
        if self.workers < 1:
            raise ConfigError(f"model '{self.name}': workers must be >= 1, got {self.workers}")
        try:  # a file of the version folder, never a path that could leave it
            check_name(self.model_filename, "default_model_filename")
        except InvalidInputError as exc:
            raise ConfigError(f"model '{self.name}': {exc}") from None

    @property
    def thread_budget(self) -> int:
        """Intra-op threads per instance: given, else the usable cores shared by every
        instance of every worker process (8 cores, 2 instances, 2 workers: 2 threads)."""
        return self.threads or max(1, self.usable // (self.instances * self.workers))

    @property
    def usable(self) -> int:
        """The cores the server's processes share: given (a Ray replica's CPUs), else the
        cores this process may run on."""
        return self.cores or usable_cores()

    def oversubscription(self) -> str | None:
        """Why the explicit thread count oversubscribes the CPU, or None when it fits (or is
        the default, which shares the cores)."""
        if self.threads is None:
            return None
        used, cores = self.threads * self.instances * self.workers, self.usable
        if used <= cores:
            return None
        return (f"model '{self.name}': {self.threads} thread(s) x {self.instances} "
                f"instance(s) x {self.workers} worker(s) = {used} threads on {cores} usable "
                "core(s); they will compete for the CPU (leave the thread count out to share "
                "the cores)")

    def describe(self) -> str:
        """One line: threads x instances and the batching (a sweep's row name)."""
        batch = (f"batch {self.max_batch_size}/{self.max_queue_delay_us} µs"
                 if self.dynamic_batching and self.max_batch_size > 1 else "no batching")
        return f"{self.thread_budget} thr x {self.instances} inst, {batch}"

    def batching(self) -> BatchingConfig:
        """The batcher's settings; a model without dynamic batching runs requests one by one."""
        size = self.max_batch_size if self.dynamic_batching and self.max_batch_size > 0 else 1
        return BatchingConfig(max_batch_size=size,
                              preferred_batch_size=self.preferred_batch_size,
                              max_queue_delay_us=self.max_queue_delay_us,
                              max_queue_size=self.max_queue_size,
                              default_timeout_us=self.default_timeout_us,
                              length_buckets=self.length_buckets)

    def with_overrides(self, overrides: dict[str, Any]) -> ModelConfig:
        """This config with the non-None ``overrides`` applied (the command line's settings)."""
        unknown = set(overrides) - set(_OVERRIDABLE)
        if unknown:
            raise ConfigError(f"unknown model setting(s) {sorted(unknown)}; settings are "
                              f"{list(_OVERRIDABLE)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "version_policy" in given:
            given["version_policy"] = VersionPolicy.parse(given["version_policy"])
        if "guard" in given:
            given["guard"] = GuardConfig.parse(given["guard"])
        for key in ("preferred_batch_size", "length_buckets"):
            if key in given:
                given[key] = tuple(sorted(int(v) for v in given[key]))
        if any(k in given for k in ("max_batch_size", "max_queue_delay_us",
                                    "preferred_batch_size", "length_buckets")):
            given.setdefault("dynamic_batching", given.get("max_batch_size", 1) > 0)
        types = {f.name: f.type for f in fields(self)}
        for key, value in given.items():
            if types[key] in ("int", "int | None") and (
                    isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"model '{self.name}': {key} must be a whole number, got "
                                  f"{value!r}")
        return replace(self, **given)


def read_model_config(folder: Path, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The layered config of the model folder ``folder`` (see the module docstring)."""
    config = ModelConfig(name=folder.name)
    pbtxt = folder / "config.pbtxt"
    if pbtxt.is_file():
        config = _from_pbtxt(config, parse(pbtxt.read_text()), pbtxt)
    config = config.with_overrides(_read_settings(folder / RTINFER_CONFIG))
    capture = config.guard.capture if config.guard and "guard" not in (overrides or {}) \
        else None  # the command line's guard replaces the file's: only the file's is checked
    parts = Path(capture).parts if capture is not None else ()
    if capture is not None and (Path(capture).is_absolute() or not parts or any(
            p == ".." or p.startswith(".") for p in parts) or parts[0].isdigit()):
        # rtinfer.json travels with the repository: it may only write inside its model folder,
        # never into a version folder (the operator's command line may name any folder).
        raise ConfigError(f"{folder / RTINFER_CONFIG}: guard.capture must be a folder inside "
                          f"the model folder that is not a version folder, got {capture!r}")
    return config.with_overrides(overrides or {})


def _read_settings(path: Path) -> dict[str, Any]:
    """A model folder's ``rtinfer.json`` as a dict ({} without one); refused unless it holds
    a JSON object."""
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or remove it") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path} must hold a JSON object of settings; fix or remove it")
    return settings


def _from_pbtxt(config: ModelConfig, msg: dict[str, list[Any]], path: Path) -> ModelConfig:
    name = first(msg, "name", config.name)
    if name != config.name:
        raise ConfigError(f"{path} names the model '{name}' but its folder is "
                          f"'{config.name}'; they must agree (as in Triton)")
    platform = first(msg, "platform") or first(msg, "backend")
    if platform not in (None, "onnxruntime_onnx", "onnxruntime", "litert",
                        "tensorflow_savedmodel"):
        raise ConfigError(f"{path}: platform '{platform}' is not servable by rtinfer; it "
                          "serves ONNX models (platform onnxruntime_onnx), .tflite files "
                          "(backend litert) and SavedModels (tensorflow_savedmodel)")
    batching = first(msg, "dynamic_batching")
    queue = first(batching or {}, "default_queue_policy", {})
    groups = msg.get("instance_group") or []
    instances = sum(int(first(g, "count", 1)) for g in groups) or 1
    threads = None
    for param in msg.get("parameters", []):
        if first(param, "key") == "intra_op_thread_count":
            threads = int(first(first(param, "value", {}), "string_value", "0")) or None
    policy = first(msg, "version_policy")
    return replace(
        config,
        max_batch_size=int(first(msg, "max_batch_size", 0)),
        dynamic_batching=batching is not None,
        preferred_batch_size=tuple(sorted((batching or {}).get("preferred_batch_size", []))),
        max_queue_delay_us=int(first(batching or {}, "max_queue_delay_microseconds", 0)),
        max_queue_size=int(first(queue, "max_queue_size", 0)) or config.max_queue_size,
        default_timeout_us=int(first(queue, "default_timeout_microseconds", 0)),
        instances=instances,
        threads=threads,
        version_policy=_pbtxt_policy(policy, path),
        model_filename=first(msg, "default_model_filename", config.model_filename),
    )


def _pbtxt_policy(policy: dict[str, list[Any]] | None, path: Path) -> VersionPolicy:
    if not policy:
        return VersionPolicy()
    if "latest" in policy:
        return VersionPolicy.parse({"latest": first(first(policy, "latest"), "num_versions", 1)})
    if "specific" in policy:
        return VersionPolicy.parse({"specific": first(policy, "specific").get("versions", [])})
    if "all" in policy:
        return VersionPolicy(latest=None)
    raise ConfigError(f"{path}: version_policy must be latest, specific or all; got "
                      f"{sorted(policy)}")


def merge_settings(folder: Path, settings: Mapping[str, Any], *,
                   drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model folder's ``rtinfer.json`` with ``settings`` merged in (None values left out)
    and the keys in ``drop`` removed, checked as a :class:`ModelConfig`; nothing is written.
    A model's raw inputs come from a kit or from a task's pre-processing, never both: setting
    one removes the other. An existing file that is not a JSON object is refused."""
    current = _read_settings(folder / RTINFER_CONFIG)
    given = {k: _jsonable(v) for k, v in settings.items() if v is not None}
    if "raw" in given:
        drop = (*drop, "kit", "kit_size")
    elif "kit" in given:
        drop = (*drop, "raw")
    merged = {k: v for k, v in {**current, **given}.items() if k not in drop}
    ModelConfig(name=folder.name).with_overrides(merged)  # a bad setting fails here
    return merged


def write_settings(folder: Path, settings: Mapping[str, Any], *,
                   drop: tuple[str, ...] = ()) -> Path:
    """Merge ``settings`` into the model folder's ``rtinfer.json`` (:func:`merge_settings`)
    and write it atomically; no file is created for no settings."""
    path = folder / RTINFER_CONFIG
    merged = merge_settings(folder, settings, drop=drop)
    if not merged and not path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rtinfer-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(merged, indent=2))
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, VersionPolicy):
        return "all" if value.latest is None and not value.specific else (
            {"specific": list(value.specific)} if value.specific else {"latest": value.latest})
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value
