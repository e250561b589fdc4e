"""Issue 20's target 3: ``rtinfer optimize`` on the perception CNN at the camera's 3x224x224.

    python benchmarks/optimize_perception.py [--size 224] [--max-drop 0.5pt]
                                             [--time-budget 480] [--json out.json]

The kit's digits are 32x32; ``shapes`` tells the search the deployment's size, so every
candidate (the original on ONNX Runtime, OpenVINO and PyTorch eager; int8 variants; the
structured-pruned network and its int8 forms) is timed at batch 1 on the real test digits
resized to it, while accuracy is judged on the kit's splits as they are. The final rounds are
interleaved: each speedup is the median of per-round p50 ratios against ONNX Runtime fp32,
measured in the same run (numpy linear percentiles, 2 intra-op threads). Goal: >= 6x ONNX
Runtime fp32 with held-out top-1 within 0.5 point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtinfer.hardware import environment
from rtinfer.optimize.search import optimize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--max-drop", default="0.5pt")
    ap.add_argument("--time-budget", type=float, default=480)
    ap.add_argument("--json", default="results/optimize_perception.json")
    args = ap.parse_args()

    shape = (1, 3, args.size, args.size)
    result = optimize(kit="perception", max_drop=args.max_drop, time_budget_s=args.time_budget,
                      shapes={"image": shape}, threads=2, resume=False,
                      progress=lambda m: print(f"  {m}", flush=True))
    env = environment()
    cpu = env["cpu"]
    print(f"\nperception at {shape}, batch 1, {result['threads']} threads, {cpu['model']} "
          f"({cpu['logical_cores']} logical cores; {', '.join(cpu['flags'])}); "
          f"speedup = median of per-round p50 ratios vs ONNX Runtime fp32 (same run)")
    print(f"{'candidate':<36}{'top1 (val)':>11}{'p50 ms':>9}{'p99 ms':>9}{'speedup':>9}")
    base = result["float_metrics"]["top1"]
    for r in result["candidates"]:
        if r["final"] is None:
            continue
        fin = r["final"]
        mark = "  <- chosen" if r["chosen"] else ""
        print(f"{r['id']:<36}{base - r['validation']['drop']:>11.4f}"
              f"{fin['latency_ms']['p50']:>9.3f}{fin['latency_ms']['p99']:>9.3f}"
              f"{fin['speedup_vs_original_ort']:>8.2f}x{mark}")
    held = result["held_out"]
    print(f"held-out top-1 {held['original']['top1']:.4f} -> {held['chosen']['top1']:.4f}; "
          f"search {result['elapsed_s']:.0f} s")
    beyond = held.get("beyond_split")
    if beyond:
        print(f"{beyond['what']}: top-1 {beyond['original']['top1']:.4f} -> "
              f"{beyond['candidate']['top1']:.4f} (reported, not used to choose)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "shape": shape, "optimize": result},
                              indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
