"""What the online accuracy guard costs live traffic: p99 and throughput of the intent kit's
int8 model served without a guard, with the guard sampling 2%, and sampling 10% of requests,
measured side by side in one run.

    python benchmarks/guard_overhead.py [--kit-size full] [--rounds 5] [--window 2]
        [--concurrency 1] [--threads 1] [--json results/guard_overhead.json]

One repository: version 1 is the kit's float model (the reference), version 2 its int8 form
(ONNX Runtime dynamic quantization) whose manifest names version 1. Three `rtinfer serve`
child processes serve it, each with ``--threads`` intra-op threads for the int8 version and
for the reference: no guard, ``--guard sample=0.02,...`` and ``--guard sample=0.1,...``
(action alert, so traffic never moves). The client (this process) sends raw sentences in TF
Serving's row form over keep-alive HTTP, closed loop; a fourth server, unguarded like the
first, is the control (how much two identical servers differ here). The servers take turns in
windows of ``--window`` s for ``--rounds`` rounds, the order rotating, each server's windows
pooled. Goal (the issue's): p99 at 2% sampling within 5% of no guard.

Latency percentiles: numpy linear (Hyndman-Fan type 7). The client shares the machine's
cores with the servers; its CPU use is printed beside each row. On a shared machine the
figures are noisy: read the ratios to the no-guard row of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import rtinfer
from _serving import child_server, interleaved, python
from rtinfer.bench.stats import ESTIMATOR
from rtinfer.hardware import cpu_info, environment
from rtinfer.serve.inthread import free_port

GOAL_P99_COST = 0.05


def _guard_status(port: int, model: str) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index",
                                 data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        index = json.loads(r.read())
    entry = next(e for e in index if e["name"] == model and e.get("version") == "2")
    return dict(entry.get("guard", {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kit-size", default="full")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("results/guard_overhead.json"))
    args = ap.parse_args()

    from rtinfer import kits
    from rtinfer.optimize import Quantize, quantize

    kit = kits.load("intent", size=args.kit_size)
    name = "intent"
    original = rtinfer.import_model(kit.model_path)
    int8 = quantize(original, Quantize(method="dynamic"))
    work = Path(tempfile.mkdtemp(prefix="rtinfer-guard-bench-"))
    try:
        repo = work / "repo"
        rtinfer.save_artifact(original, repo, name)
        rtinfer.save_artifact(int8, repo, name, reference={"version": 1}, engine="onnxruntime")
        (repo / name / "rtinfer.json").write_text(json.dumps({"kit": "intent",
                                                              "kit_size": args.kit_size}))
        sentences = [str(s) for s in kit.split("test").raw["sentence"][:1024]]
        bodies = [json.dumps({"instances": [s]}).encode() for s in sentences]
        guard = "metric=top1_agreement,threshold=0.9,window=500,action=alert,queue=16"
        # A second unguarded server is the control: two identical servers differ by this
        # much on this machine, which bounds what the guard's figures can show.
        configs = {"no guard": [], "no guard (control)": [],
                   "guard 2%": ["--guard", f"sample=0.02,{guard}"],
                   "guard 10%": ["--guard", f"sample=0.1,{guard}"]}
        ports = {label: free_port() for label in configs}
        with contextlib.ExitStack() as stack:
            for label, extra in configs.items():
                stack.enter_context(child_server(
                    [python(), "-m", "rtinfer.cli", "serve", str(repo), "--port",
                     str(ports[label]), "--threads", str(args.threads), "--max-batch-size",
                     "1", *extra], ports[label], "/v2/health/ready"))
            path = f"/v1/models/{name}:predict"
            targets = {label: (ports[label], path, bodies) for label in configs}
            interleaved(targets, args.concurrency, 1, 0.5)  # warm every server's path
            results = interleaved(targets, args.concurrency, args.rounds, args.window)
            guards = {label: _guard_status(ports[label], name) for label in configs
                      if label.startswith("guard")}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["no guard"].summary()
    rows = {}
    print(f"intent kit ({args.kit_size}) int8, ONNX Runtime dynamic, {args.threads} thread(s) "
          f"per session, concurrency {args.concurrency}, {args.rounds} x {args.window:g} s "
          f"rounds; CPU: {cpu_info().model}; percentiles: {ESTIMATOR}")
    for label, res in results.items():
        s = res.summary()
        lat = s["latency_ms"]
        row = {**s, "p99_vs_no_guard": lat["p99"] / base["latency_ms"]["p99"],
               "throughput_vs_no_guard": s["throughput_rps"] / base["throughput_rps"],
               "guard": guards.get(label)}
        rows[label] = row
        g = guards.get(label) or {}
        print(f"{label:18s} {s['throughput_rps']:7.1f} req/s  p50 {lat['p50']:6.2f} ms  p99 "
              f"{lat['p99']:6.2f} ms  ({row['p99_vs_no_guard']:.3f}x p99, "
              f"{row['throughput_vs_no_guard']:.3f}x throughput)  errors {res.errors}  "
              f"client CPU {s['client_cpu_pct']:.0f}%"
              + (f"  guard: {g.get('samples')} scored, {g.get('dropped')} dropped, "
                 f"score {g.get('score')}" if g else ""))
    cost = rows["guard 2%"]["p99_vs_no_guard"] - 1
    control = rows["no guard (control)"]["p99_vs_no_guard"] - 1
    verdict = "met" if cost <= GOAL_P99_COST else "NOT met"
    print(f"p99 cost of the guard at 2%: {100 * cost:+.1f}% (goal <= "
          f"{100 * GOAL_P99_COST:.0f}%: {verdict}); the control server differs by "
          f"{100 * control:+.1f}%")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "kind": "guard-overhead", "rows": rows, "p99_cost_at_2pct": cost,
        "control_p99_difference": control, "goal": GOAL_P99_COST,
        "settings": vars(args) | {"json": str(args.json)}, "when": time.time(),
        "percentiles": ESTIMATOR, "environment": environment()}, indent=2, default=str))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
