"""Issue #6's check: ``rtinfer optimize`` on the intent kit against its peers, in one run.

    python benchmarks/optimize_intent.py [--max-drop 1pt] [--time-budget 900] [--repo DIR]
                                         [--artifact REPO/intent/N]   # reuse a chosen model

1. ``optimize(kit="intent", max_drop=…)`` chooses a model (or ``--artifact`` names one chosen
   before), timing how long the search took;
2. four sessions are loaded side by side: PyTorch eager fp32 (the original module), ONNX
   Runtime fp32, OpenVINO running NNCF's default int8 (the best off-the-shelf int8 in
   REFERENCE.md section 1), and the chosen model on the engine optimize picked;
3. three workloads, each measured in interleaved rounds (speedup = median of per-round p50
   ratios against PyTorch eager): batch 1 at 128 tokens (one test sentence padded), batch 1 at
   the kit's real sentence lengths (each test sentence at its own length, in turn), and
   batch 32 at real lengths (sentences sorted by length, each batch padded to its longest);
4. held-out intent accuracy of every peer on the kit's test split (templates unseen in
   training), against the float model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer import kits
from rtinfer.bench.interleave import measure_interleaved, ratio
from rtinfer.deploy.artifact import load_artifact
from rtinfer.engines import load
from rtinfer.engines.base import run_in_batches
from rtinfer.hardware import environment
from rtinfer.models import import_model, minilm_folder, tokenize
from rtinfer.optimize import Quantize, quantize
from rtinfer.optimize.search import optimize

THREADS = 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-drop", default="1pt")
    ap.add_argument("--time-budget", type=float, default=900)
    ap.add_argument("--repo", default="results/optimize-intent-repo")
    ap.add_argument("--artifact", help="use this chosen model instead of searching")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--json", default="results/optimize_intent.json")
    args = ap.parse_args()

    kit = kits.load("intent")
    t0 = time.monotonic()
    if args.artifact:
        art = load_artifact(args.artifact)
        chosen_path, engine = args.artifact, art.engine
        search = None
    else:
        search = optimize(kit=kit, max_drop=args.max_drop, time_budget_s=args.time_budget,
                          out=args.repo, name="intent", threads=THREADS, progress=print)
        chosen_path, engine = search["artifact"], search["chosen"]["engine"]
    search_s = time.monotonic() - t0

    original = import_model(kit.model_path)
    calib = kit.split("calibration").inputs
    nncf = quantize(original, Quantize(engine="openvino"), calib)
    test = kit.split("test")
    sessions = {
        "pytorch-eager-fp32": load(original, "torch", THREADS),
        "onnxruntime-fp32": load(original, "onnxruntime", THREADS),
        "openvino-nncf-int8": load(nncf, "openvino", THREADS),
        f"rtinfer-chosen ({engine})": load(import_model(chosen_path), engine, THREADS),
    }
    sentences = [str(s) for s in test.raw["sentence"]][:200]
    folder = minilm_folder()
    workloads = {
        "batch 1, 128 tokens": tokenize(folder, [sentences[0].lower()], seq_len=128),
        "batch 1, real lengths": [tokenize(folder, [s.lower()]) for s in sentences],
        "batch 32, real lengths": _length_batches(folder, sentences, 32),
    }
    report: dict[str, Any] = {"search_s": search_s, "search": _brief(search),
                              "workloads": {}, "accuracy": {}, "environment": environment()}
    base = "pytorch-eager-fp32"
    try:
        for wname, feeds in workloads.items():
            print(f"measuring {wname}")
            res = measure_interleaved(sessions, feeds, rounds=args.rounds, window_s=args.window)
            report["workloads"][wname] = {
                k: {"p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                    "samples_per_s": r["samples_per_s"], "speedup_vs_eager": ratio(res, base, k)}
                for k, r in res.items()}
        for name, s in sessions.items():
            if name != base:
                outputs = run_in_batches(s, test.inputs, 64)
                report["accuracy"][name] = kit.recipe.evaluate(kit.meta, test.targets, outputs)
    finally:
        for s in sessions.values():
            s.close()
    _print(report, args.max_drop)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json}")


def _length_batches(folder: Any, sentences: list[str], size: int) -> list[dict[str, np.ndarray]]:
    ordered = sorted(sentences, key=len)
    return [tokenize(folder, [s.lower() for s in ordered[i:i + size]])
            for i in range(0, len(ordered) - size + 1, size)]


def _brief(search: dict[str, Any] | None) -> dict[str, Any] | None:
    if search is None:
        return None
    return {"chosen": search["chosen"], "held_out": search["held_out"],
            "elapsed_s": search["elapsed_s"], "report": search.get("report"),
            "candidates": [{k: r[k] for k in ("id", "validation", "quick", "final")}
                           for r in search["candidates"]]}


def _print(report: dict[str, Any], budget: str) -> None:
    env = report["environment"]["cpu"]
    print(f"\nCPU {env['model']} ({env['usable_cores']} cores), {THREADS} intra-op threads; "
          "percentiles numpy linear (type 7); speedup = median of per-round p50 ratios vs "
          "PyTorch eager, interleaved rounds; closed loop")
    if report["search"]:
        print(f"search: {report['search_s']:.0f} s wall (budget {budget} on accuracy)")
    for wname, rows in report["workloads"].items():
        print(f"\n{wname}:")
        print(f"  {'model':34s} {'p50 ms':>8s} {'p99 ms':>8s} {'samples/s':>10s} "
              f"{'vs eager':>9s}")
        for name, r in rows.items():
            print(f"  {name:34s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['samples_per_s']:10.1f} {r['speedup_vs_eager']:8.2f}x")
    print("\nheld-out intent accuracy (test templates unseen in training):")
    for name, m in report["accuracy"].items():
        print(f"  {name:34s} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
