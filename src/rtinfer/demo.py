"""``rtinfer demo`` / ``make demo``: the main job end to end on a built-in kit.

1. build the kit (fraud by default: about half a minute on 2 cores; intent and perception
   take longer), deterministically, into the cache;
2. ``optimize`` it under an accuracy budget (the fastest variant within budget, or the
   original when nothing beats it), writing the artifact and ``report.html`` into a repository;
3. serve that repository on a free loopback port, send a short closed-loop load of the kit's
   real test inputs over the Open Inference Protocol (KServe v2 JSON), check every answer
   against the in-process model, and stop the server;
4. return one summary (printed as a table by the CLI) with the report's path.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._progress import Progress
from rtinfer.bench.stats import latency_summary

__all__ = ["run_demo"]

_BUDGETS = {"fraud": "1pt", "perception": "0.5pt", "intent": "1pt"}


def run_demo(kit: str = "fraud", *, out: str | Path, time_budget_s: float = 240.0,
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
    return {"kind": "demo", "kit": kit, "optimize": result, "serving": served}


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
