"""The highest QPS that keeps p99 within the objective, across serving settings.

    result = sweep("repo/intent", load_samples(kit="intent"), slo_p99_ms=50, out_dir="results/s")
    result["best"]            # {"config": {...}, "qps": 120.0, "p99_ms": 41.2, ...}
    write_config("repo/intent", result["best"]["config"])   # into config.pbtxt

In the spirit of Triton's model analyzer: every combination of intra-op threads, instances and
dynamic batching (max batch size, queue delay) that fits the machine's cores is served
in-process by rtinfer's engines and batcher; for each, a 1 s closed-loop probe measures its
capacity C, then server-scenario runs (open loop, Poisson arrivals) offer ``f x C`` QPS for
falling fractions ``f`` until one is VALID with p99 within the objective twice in a row. The
best configuration is the one with the highest such QPS. Every run's full result is kept, so
the report can plot throughput against p99.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rtinfer._progress import Progress
from rtinfer.bench.inprocess import SCHEMA
from rtinfer.bench.loadgen import EARLY_STOPPING_MIN, LoadSpec, probe_capacity, run_loadgen
from rtinfer.bench.samples import Samples
from rtinfer.bench.targets import InProcessTarget, Target
from rtinfer.deploy.settings import (
    RTINFER_CONFIG,
    ModelConfig,
    merge_settings,
    read_model_config,
    write_settings,
)
from rtinfer.hardware import environment, usable_cores

__all__ = ["candidates", "read_config", "sweep", "swept", "write_config"]

FRACTIONS = (0.8, 0.55, 0.35, 0.2)


def candidates(threads: Sequence[int], instances: Sequence[int], batch_sizes: Sequence[int],
               delays_us: Sequence[int], cores: int | None = None,
               name: str = "model") -> list[ModelConfig]:
    """Every combination whose threads x instances fits ``cores`` (no oversubscription), as
    the server's own settings type (batch size 1 or less: no dynamic batching)."""
    cores = cores or usable_cores()
    out = []
    for t, i, b in itertools.product(threads, instances, batch_sizes):
        if t * i > cores:
            continue
        for d in (delays_us if b > 1 else (0,)):
            out.append(ModelConfig(name, threads=t, instances=i,
                                   max_batch_size=b if b > 1 else 0, dynamic_batching=b > 1,
                                   max_queue_delay_us=d))
    return out


def sweep(model: str | Path, samples: Samples, *, slo_p99_ms: float, out_dir: str | Path,
          configs: Sequence[ModelConfig] | None = None, duration_s: float = 3.0,
          engine: str | None = None, fractions: Sequence[float] = FRACTIONS,
          progress: Progress | None = None) -> dict[str, Any]:
    """Find, per configuration, the highest tried QPS that is VALID within ``slo_p99_ms``."""
    say = progress or (lambda _msg: None)
    configs = list(configs or candidates((1, usable_cores()), (1, 2), (1, 8), (0, 2000),
                                         name=Path(model).name))
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []

    def server_run(target: Target, cfg: ModelConfig, qps: float,
                   folder: str) -> dict[str, Any]:
        run = run_loadgen(target, samples, LoadSpec(
            "server", qps=qps, slo_p99_ms=slo_p99_ms,
            duration_s=max(duration_s, 1.1 * EARLY_STOPPING_MIN / qps)),
            out / folder, series=cfg.describe())
        run["sweep_config"] = swept(cfg)
        runs.append(run)
        return run

    for k, cfg in enumerate(configs):
        say(f"config {k + 1}/{len(configs)}: {cfg.describe()}")
        with _target(model, engine, cfg) as target:
            capacity = probe_capacity(target, samples)
            best: dict[str, Any] = {"qps": None, "p99_ms": None,
                                    "validity": "no tried QPS met the objective"}
            for f in fractions:
                qps = round(f * capacity, 1)
                if qps <= 0:
                    continue
                # A load counts only when it holds twice in a row: one lucky run on a shared
                # machine is not a QPS a config can be written for.
                p99s = []
                for attempt in ("", "-repeat"):
                    say(f"config {k + 1}/{len(configs)}: {qps:g} QPS{attempt}")
                    run = server_run(target, cfg, qps, f"c{k}-server-{qps:g}{attempt}")
                    if not (run["valid"] and run["meets_objective"]):
                        break
                    p99s.append(run["latency_ms"]["p99"])
                if len(p99s) == 2:
                    best = {"qps": qps, "p99_ms": max(p99s), "validity": "VALID"}
                    break
        rows.append({"config": swept(cfg), "name": cfg.describe(),
                     "capacity_samples_per_s": capacity, **best})
    passing = [r for r in rows if r["qps"]]
    winner = max(passing, key=lambda r: r["qps"]) if passing else None
    return {
        "schema": SCHEMA,
        "kind": "loadgen-sweep",
        "label": f"sweep of {Path(model).name}",
        "model": str(model),
        "objective": {"p99_ms": slo_p99_ms},
        "method": (f"per config: capacity C from a 1 s closed-loop probe, then server runs "
                   f"at {list(fractions)} x C until one is VALID with p99 within the "
                   "objective in two runs in a row (p99 reported: the worse of the "
                   "two)"),
        "samples": samples.describe(),
        "rows": rows,
        "best": winner,
        "runs": runs,
        "environment": environment(),
    }


def swept(cfg: ModelConfig) -> dict[str, int]:
    """The settings a sweep varies, as its result (and ``write_config``) records them."""
    return {"threads": cfg.thread_budget, "instances": cfg.instances,
            "max_batch_size": cfg.max_batch_size if cfg.dynamic_batching else 0,
            "max_queue_delay_us": cfg.max_queue_delay_us}


def _target(model: str | Path, engine: str | None, cfg: ModelConfig) -> InProcessTarget:
    return InProcessTarget(model, engine=engine, threads=cfg.thread_budget,
                           instances=cfg.instances,
                           batching=cfg.batching() if _batches(cfg) else None)


def write_config(model_dir: str | Path, config: Mapping[str, Any] | ModelConfig) -> Path:
    """Write ``config`` (a sweep row's settings, or a :class:`ModelConfig`) into the model's
    ``config.pbtxt`` (Triton's fields: max_batch_size, dynamic_batching, instance_group, the
    ORT backend's thread counts)."""
    from rtinfer.deploy.artifact import load_artifact
    from rtinfer.deploy.pbtxt import triton_config

    art = load_artifact(model_dir)
    folder = art.path.parent
    cfg = config if isinstance(config, ModelConfig) else _config(folder.name, config)
    batching = _batches(cfg)
    text = triton_config(art.name, art.model.spec,
                         max_batch_size=cfg.max_batch_size if batching else 1,
                         threads=cfg.threads, instances=cfg.instances,
                         dynamic_batching=batching, max_queue_delay_us=cfg.max_queue_delay_us)
    path = folder / "config.pbtxt"
    path.write_text(text)
    # rtinfer.json outranks config.pbtxt in rtinfer serve: the settings it repeats must say
    # the same, or the server would run its old values.
    if (folder / RTINFER_CONFIG).is_file():
        present = set(merge_settings(folder, {}))  # checked: a broken file is a ConfigError
        row = {**swept(cfg), "threads": cfg.threads}  # None: the cores are shared, no pin
        write_settings(folder, {k: v for k, v in row.items() if k in present},
                       drop=("preferred_batch_size",
                             *(("threads",) if cfg.threads is None else ())))
    return path


def _batches(cfg: ModelConfig) -> bool:
    """Whether a setting batches requests dynamically (a batch of one does not)."""
    return cfg.dynamic_batching and cfg.max_batch_size > 1


def _config(name: str, row: Mapping[str, Any]) -> ModelConfig:
    unknown = set(row) - {"threads", "instances", "max_batch_size", "max_queue_delay_us"}
    if unknown:
        raise ValueError(f"unknown serving setting(s) {sorted(unknown)} in {dict(row)}")
    batch = int(row.get("max_batch_size", 0))
    return ModelConfig(name, threads=row.get("threads") or None,
                       instances=int(row.get("instances", 1)), max_batch_size=batch,
                       dynamic_batching=batch > 1,
                       max_queue_delay_us=int(row.get("max_queue_delay_us", 0)))


def read_config(model_dir: str | Path) -> ModelConfig | None:
    """The serving settings of a model folder (None without a ``config.pbtxt``), as
    ``rtinfer serve`` sees them (:func:`rtinfer.deploy.settings.read_model_config`: one
    parser of the text format, and ``rtinfer.json`` layered on top)."""
    folder = Path(model_dir)
    model_folder = next((p for p in (folder, folder.parent)
                         if (p / "config.pbtxt").is_file()), None)
    if model_folder is None:
        return None
    return read_model_config(model_folder)
