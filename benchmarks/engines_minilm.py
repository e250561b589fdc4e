"""PyTorch eager vs ONNX Runtime vs OpenVINO on MiniLM, side by side in one run.

    python benchmarks/engines_minilm.py [--threads 2] [--window 1.0] [--json results/x.json]

Workload: all-MiniLM-L6-v2 with its real weights, one real sentence padded to 128 tokens, at
batch 1 and batch 32; fp32 everywhere (OpenVINO's precision is pinned to f32). Engines are
measured in interleaved rounds (closed-loop windows until three agree within 10%, per engine per
round); latency percentiles use numpy's linear estimator (Hyndman-Fan type 7), pooled over
rounds. Speedups are the median over rounds of PyTorch's p50 over the engine's p50 in the same
round, all measured in this run on this machine. REFERENCE.md section 1 leads us to expect, at
batch 1, ONNX Runtime >= 1.25x and OpenVINO >= 1.5x; the script prints whether this run met it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtinfer.bench.builtin import compare_builtin
from rtinfer.cli import print_comparison
from rtinfer.hardware import usable_cores

EXPECTED_BATCH1 = {"onnxruntime": 1.25, "openvino": 1.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--window", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    result = compare_builtin(["torch", "onnxruntime", "openvino"], seq_len=128, batch_sizes=batches,
                      threads=args.threads, window_s=args.window,
                      rounds=args.rounds,
                      progress=lambda msg: print(f"  {msg}", flush=True))
    print_comparison(result, f"all-MiniLM-L6-v2, seq 128, {args.threads} intra-op threads, "
                             "fp32")
    print("\nexpectation at batch 1 (REFERENCE.md section 1):")
    for row in result["rows"]:
        want = EXPECTED_BATCH1.get(row["engine"])
        if row["batch"] == 1 and want:
            got = row["speedup_vs_baseline"]
            print(f"  {row['engine']:12s} {got:.2f}x vs torch (expected >= {want}x): "
                  f"{'met' if got >= want else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
