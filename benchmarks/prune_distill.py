"""Pruning and distillation side by side: accuracy on held-out data and latency ratio of every
variant against the original, measured in this run on ONNX Runtime at 2 threads, batch 1.

    PYTHONPATH=src python benchmarks/prune_distill.py [--only perception|intent] [--json out.json]

perception (DigitResNet, measured at 224x224, the size a camera pipeline feeds; trained at
32x32 and fully convolutional): the original; unstructured magnitude pruning (the seed's
example: l1_unstructured 50% on every Conv2d) — same dense kernels, so expect no speedup;
structured pruning by weight magnitude and by activation statistics, 50% of the channels in 2
steps with fine-tuning between them.

intent (MiniLM + head, one real test sentence): the teacher; a distilled student with half the
layers (0, 2, 5 of 6) initialised from the teacher; the same with half its FFN neurons removed.

All variants of a kit are timed together in interleaved rounds; the ratio is the median of the
per-round p50 ratios (numpy linear percentiles). Held-out accuracy is the kit's test split.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rtinfer.hardware import environment
from rtinfer.optimize import Distill, Prune, distill, prune
from rtinfer.optimize._torch_job import latency_feeds, measure_side_by_side, task_from

IMAGE_SIZE = 224


def _say(msg: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {msg}", flush=True)


def _table(kit: str, results: dict[str, Any], perf: dict[str, Any], metric: str) -> list[dict]:
    rows = []
    base = next(iter(results.values())).report["held_out"]["original"][metric]
    rows.append({"kit": kit, "variant": "original", metric: base, "drop_points": 0.0,
                 "latency_ratio": 1.0, "p50_ms": perf["models"]["original"]["p50_ms"],
                 "onnx_bytes": next(iter(results.values())).report["size"]["original"][
                     "onnx_bytes"]})
    for name, r in results.items():
        held = r.report["held_out"]
        label = next(k for k in held if k not in ("original", "fidelity", "samples", "drop"))
        rows.append({"kit": kit, "variant": name, metric: held[label][metric],
                     "drop_points": 100 * held["drop"],
                     "latency_ratio": perf["models"][name]["speedup"],
                     "ratio_per_round": perf["models"][name]["speedup_per_round"],
                     "p50_ms": perf["models"][name]["p50_ms"],
                     "onnx_bytes": r.report["size"][label]["onnx_bytes"]})
    print(f"\n{kit}: held-out {metric} and latency ratio vs the original "
          f"(ONNX Runtime, {perf['threads']} threads, batch 1, input "
          f"{perf['input_shapes']}, {perf['rounds']} interleaved rounds)")
    print(f"{'variant':<34}{metric:>9}{'drop pt':>9}{'speedup':>9}{'p50 ms':>9}{'ONNX KB':>10}")
    for row in rows:
        print(f"{row['variant']:<34}{row[metric]:>9.4f}{row['drop_points']:>9.2f}"
              f"{row['latency_ratio']:>8.2f}x{row['p50_ms']:>9.2f}{row['onnx_bytes'] / 1e3:>10.0f}")
    return rows


def perception() -> list[dict]:
    variants = {
        "magnitude 50% unstructured (seed)": Prune(amount=0.5, scope="layer",
                                                   layers=("Conv2d",)),
        "structured 50% magnitude": Prune(structured=True, amount=0.5, scope="layer", steps=2,
                                          finetune_steps=100, lr=2e-3),
        "structured 50% activation": Prune(method="activation", structured=True, amount=0.5,
                                           scope="layer", steps=2, finetune_steps=100,
                                           lr=2e-3),
    }
    results = {}
    for name, config in variants.items():
        print(f"perception: {name}", flush=True)
        results[name] = prune("perception", config, measure=False, progress=_say)
        sparsity = results[name].report.get("sparsity")
        if sparsity:
            print(f"  weight sparsity {sparsity['sparsity']:.1%} over "
                  f"{len(sparsity['layers'])} conv layers")
    task = task_from(kit="perception")
    models = {"original": task.original, **{n: r.model for n, r in results.items()}}
    perf = measure_side_by_side(models, latency_feeds(task, IMAGE_SIZE), progress=_say)
    return _table("perception", results, perf, "top1")


def intent(steps: int, finetune: int) -> list[dict]:
    variants = {
        "distilled, half the layers": Distill(steps=steps, finetune_steps=finetune),
        "distilled, half layers + half FFN": Distill(steps=steps, finetune_steps=finetune,
                                                     width=0.5),
    }
    results = {}
    for name, config in variants.items():
        print(f"intent: {name}", flush=True)
        results[name] = distill("intent", config, measure=False, progress=_say)
    task = task_from(kit="intent")
    models = {"original": task.original, **{n: r.model for n, r in results.items()}}
    perf = measure_side_by_side(models, latency_feeds(task, None), progress=_say)
    return _table("intent", results, perf, "accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("perception", "intent"))
    parser.add_argument("--steps", type=int, default=120, help="distillation steps")
    parser.add_argument("--finetune", type=int, default=40, help="fine-tuning steps")
    parser.add_argument("--json", help="write all rows as JSON here")
    args = parser.parse_args()
    env = environment()
    print(f"CPU: {env['cpu']['model']} ({env['cpu']['usable_cores']} usable cores)", flush=True)
    rows = []
    if args.only in (None, "perception"):
        rows += perception()
    if args.only in (None, "intent"):
        rows += intent(args.steps, args.finetune)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "environment": env}, f, indent=2)


if __name__ == "__main__":
    main()
