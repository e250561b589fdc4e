"""Perception kit: static int8 against fp32 on ONNX Runtime and OpenVINO, in one run.

    python benchmarks/quantize_perception.py [--size 224] [--threads 2] [--rounds 3]

The int8 model is rtinfer's default static quantization (QDQ, per-channel int8 weights, uint8
activations, MinMax on the kit's 180 calibration digits). Top-1 on the 359 test digits; latency
at batch 1 for one 3x{size}x{size} frame, p50 over interleaved rounds (numpy linear
percentile), speedup = median over rounds of ORT-fp32 p50 over the candidate's p50.
"""

from __future__ import annotations

import argparse
from statistics import median

import numpy as np

import rtinfer
from rtinfer.bench.inprocess import measure_batch
from rtinfer.optimize import Quantize, quantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kit = rtinfer.kits.load("perception")
    fp32 = rtinfer.import_model(kit.model_path)
    int8 = quantize(fp32, Quantize(), kit.split("calibration").inputs)
    frame = {"image": np.random.default_rng(0).standard_normal(
        (1, 3, args.size, args.size)).astype(np.float32)}
    sessions = {f"{name} on {engine}": rtinfer.load(model, engine, args.threads)
                for name, model in (("fp32", fp32), ("int8", int8))
                for engine in ("onnxruntime", "openvino")}
    p50: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            p50[name].append(measure_batch(s, frame, window_s=0.5,
                                           peak_flops=1e12)[0]["latency_ms"]["p50"])
    base = p50["fp32 on onnxruntime"]
    print(f"{'candidate':22s} {'top-1':>6s} {'p50 ms':>8s} {'vs ORT fp32':>11s}")
    for name, s in sessions.items():
        top1 = kit.evaluate_session(s)["top1"]
        speedup = median(b / p for b, p in zip(base, p50[name], strict=True))
        print(f"{name:22s} {top1:6.3f} {median(p50[name]):8.2f} {speedup:10.2f}x")
    print(f"batch 1, 3x{args.size}x{args.size}, {args.threads} threads, {args.rounds} rounds")


if __name__ == "__main__":
    main()
