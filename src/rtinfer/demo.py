"""``rtinfer demo`` / ``make demo``: the main job end to end on a built-in kit.

1. build the kit (perception by default: about half a minute on 2 cores; fraud is as quick,
   intent takes longer), deterministically, into the cache;
2. ``optimize`` it under an accuracy budget (the fastest variant within budget, or the
   original when nothing beats it), writing the artifact and ``report.html`` into a repository;
3. serve that repository on a free loopback port, send a short closed-loop load of the kit's
   real test inputs over the Open Inference Protocol (KServe v2 JSON), check every answer
   against the in-process model, and stop the server;
4. return one summary (printed as tables by the CLI) with the report's path and the
   :class:`BeforeAfter` of the search: the original against the chosen model.

Perception is the default because the search has something to find there: on a 2-core EPYC
the ResNet pruned to half its channels and quantized to int8 kept the held-out top-1 and ran
3.3x faster than the float original on ONNX Runtime, search included in about 3 minutes. The
fraud MLP (a 42→128→64→2 network, ~15 µs a call) gives the other honest answer, as it should:
no variant within budget beats the original by more than noise, at batch 1 or 32.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._progress import Progress
from rtinfer.bench.stats import latency_summary

__all__ = ["BeforeAfter", "run_demo"]

_BUDGETS = {"fraud": "1pt", "perception": "0.5pt", "intent": "1pt"}


@dataclass(frozen=True)
class BeforeAfter:
    """The original against the chosen model, from an ``optimize`` result: the demo's answer.

    The original is the float model on its fastest engine (what the choice had to beat);
    ``speedup`` is the chosen model's over it, the median of per-round p50 ratios of the
    interleaved final rounds (1.0 when the original is the answer); the metric is the budget's,
    on the held-out test split (``None`` without labels). Pairs are (original, chosen)."""

    batch: int
    threads: int
    candidates: tuple[str, str]           # "variant@engine", e.g. "fp32@onnxruntime"
    engines: tuple[str, str]
    p50_ms: tuple[float, float]           # at ``batch``, from the final rounds
    speedup: float
    metric: str
    metric_values: tuple[float, float] | None
    size_bytes: tuple[int, int]
    why: str

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> BeforeAfter:
        rows = {r["id"]: r for r in result["candidates"]}
        chosen = result["chosen"]
        original = rows[f"fp32@{chosen['original_engine']}"]
        after = rows[chosen["id"]]
        metric = result["budget"]["metric"]
        held = result.get("held_out", {})
        values = ((held["original"][metric], held["chosen"][metric])
                  if metric in held.get("original", {}) else None)
        return cls(
            batch=result["batch"], threads=result["threads"],
            candidates=(original["id"], after["id"]),
            engines=(original["engine"], after["engine"]),
            p50_ms=(original["final"]["latency_ms"]["p50"], after["final"]["latency_ms"]["p50"]),
            speedup=(after["final"]["speedup_vs_original_ort"]
                     / original["final"]["speedup_vs_original_ort"]),
            metric=metric, metric_values=values,
            size_bytes=(result["model"]["size_bytes"], after["size_bytes"]), why=chosen["why"])

    def rows(self) -> list[tuple[str, str, str]]:
        """(what, original, chosen) for each line of the before/after table."""
        def pair(fmt: str, values: tuple[float, float] | None) -> tuple[str, str]:
            return ("-", "-") if values is None else (format(values[0], fmt),
                                                      format(values[1], fmt))

        mib = (self.size_bytes[0] / 2**20, self.size_bytes[1] / 2**20)
        return [("candidate", *self.candidates),
                (f"p50 ms at batch {self.batch}", *pair(".3f", self.p50_ms)),
                ("speedup", "1.00x", f"{self.speedup:.2f}x"),
                (f"{self.metric} (held-out test)", *pair(".4f", self.metric_values)),
                ("size MiB", *pair(".2f", mib)),
                ("engine", *self.engines)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_demo(kit: str = "perception", *, out: str | Path, time_budget_s: float = 240.0,
             requests: int = 200, size: str = "full",
             progress: Progress | None = None) -> dict[str, Any]:
    """Build, optimize, serve and load ``kit``; see the module docstring."""
    from rtinfer import kits
    from rtinfer.optimize.search import optimize

    if kit not in _BUDGETS:
        raise ValueError(f"demo kits are {sorted(_BUDGETS)}, got {kit!r}")
    say = progress or (lambda _msg: None)
    say(f"building kit {kit} (cached after the first run)")
    loaded = kits.load(kit, size=size, progress=say)
    result = optimize(kit=loaded, max_drop=_BUDGETS[kit], time_budget_s=time_budget_s, out=out,
                      name=f"{kit}-demo", progress=say)
    say("serving the repository on loopback")
    served = _serve_and_load(Path(out), f"{kit}-demo", loaded.split("test").inputs, requests)
    return {"kind": "demo", "kit": kit, "optimize": result,
            "before_after": BeforeAfter.of(result).to_dict(), "serving": served}


def _serve_and_load(repo: Path, name: str, inputs: dict[str, np.ndarray],
                    requests: int) -> dict[str, Any]:
    """One request at a time (batch 1) over HTTP/JSON; answers compared with in-process."""
    from rtinfer.engines import load
    from rtinfer.serve import create_app, load_repository
    from rtinfer.serve.inthread import serve_in_thread

    models = load_repository(repo)
    session = models.resolve(name).session
    types = {t.name: t.kserve_datatype for t in session.spec.inputs}
    latencies, worst = [], 0.0
    with serve_in_thread(create_app(models)) as base, load(session.model, "onnxruntime") as local:
        for i in range(requests):
            row = {k: v[i % len(v)][None] for k, v in inputs.items()}
            body = json.dumps({"inputs": [
                {"name": k, "shape": list(v.shape), "datatype": types[k],
                 "data": v.ravel().tolist()} for k, v in row.items()]}).encode()
            req = urllib.request.Request(f"{base}/v2/models/{name}/infer", data=body,
                                         headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = json.loads(r.read())
            latencies.append(time.perf_counter() - t0)
            expected = local.run(row)
            for out in answer["outputs"]:
                got = np.asarray(out["data"], dtype=np.float64)
                want = expected[out["name"]].astype(np.float64).ravel()
                worst = max(worst, float(np.max(np.abs(got - want))) if got.size else 0.0)
    return {"url": base, "model": name, "requests": requests, "protocol": "KServe v2 JSON",
            "latency_ms": latency_summary(np.asarray(latencies)),
            "max_abs_diff_vs_in_process": worst, "load": "closed loop, one request at a time"}
