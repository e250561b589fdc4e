"""What serving costs, and what dynamic batching buys, measured side by side in one run.

    python benchmarks/serving_overhead.py [--rounds 5] [--seconds 2] [--window 0.5]
        [--kit-size small] [--only overhead|protocols|batching] [--json out.json]

1. Overhead. A tiny MLP (16 -> 32 -> 4) at batch 1, one intra-op thread: ``session.run`` in
   this process vs the same model behind ``rtinfer serve`` (a child process) called by one
   client over keep-alive HTTP with a KServe v2 JSON body, and over gRPC (``--grpc-port``,
   raw tensor buffers, one channel). Interleaved rounds of ``--seconds`` each; per round p50
   served minus p50 in-process; the targets are median differences of at most 0.5 ms (HTTP)
   and 0.2 ms (gRPC).
1b. Protocols. The same server, HTTP with binary tensors vs gRPC, closed loop at rising
   concurrency (the two taking turns in short windows); throughput at the highest level whose
   p99 stays within 5 ms, and the ratio gRPC / HTTP.
2. Batching. The intent kit (MiniLM + head, raw sentences in TF Serving's row form, tokenized
   inside the server) — its float model, and its int8 artifact on OpenVINO (``--precision``) —
   served twice at once: each request alone (``--max-batch-size 1``) and
   with dynamic batching grouped by length bucket (8/16/32/64 tokens). Closed-loop load at
   rising concurrency; at each level the two take turns in short windows (``--rounds`` x
   ``--window`` s each, order rotating, pooled per configuration); the figure is throughput at
   the highest level whose p99 stays within the kit's objective (50 ms). Target: batching at
   least 2x the throughput of no batching under the same p99 bound. Printed first, the
   engine's own batching gain in this process (no server): samples/s at batch 8 and 32 over
   batch 1 at the sentences' bucket length (16 tokens), interleaved rounds. A server cannot
   gain more from batching than that (less, as HTTP and tokenization cost the same per request
   either way), so it bounds what the served ratio can reach on this CPU.

Latency percentiles: numpy linear (Hyndman-Fan type 7) over every request of a window. The
client runs in this process on the same CPU as the servers; its CPU use is printed beside
each figure. Absolute times on a shared machine are noisy: read the differences and ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import rtinfer
from _serving import (
    Load,
    best_under_bound,
    child_server,
    closed_loop,
    grpc_closed_loop,
    grpc_infer_request,
    interleaved,
    python,
)
from rtinfer.bench.stats import ESTIMATOR
from rtinfer.hardware import environment, usable_cores
from rtinfer.serve.inthread import free_port

OVERHEAD_TARGET_MS = 0.5
GRPC_OVERHEAD_TARGET_MS = 0.2
PROTOCOL_P99_MS = 5.0
BATCHING_TARGET = 2.0


def tiny_model(folder: Path) -> Any:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    return rtinfer.import_model(net.eval(), (torch.randn(2, 16),), input_names=["x"],
                                output_names=["y"], out_dir=folder)


def overhead(rounds: int, seconds: float, work: Path) -> dict[str, Any]:
    model = tiny_model(work / "tiny")
    rtinfer.save_artifact(model, work / "repo", "tiny")
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                   "data": x.ravel().tolist()}]}).encode()
    grpc_request = grpc_infer_request("tiny", {"x": x})
    port, gport = free_port(), free_port()
    cmd = [python(), "-m", "rtinfer.cli", "serve", str(work / "repo"), "--port", str(port),
           "--threads", "1", "--grpc-port", str(gport)]
    rows = []
    with rtinfer.load(model, threads=1) as session, child_server(cmd, port, "/v2/health/ready"):
        closed_loop(port, "/v2/models/tiny/infer", [body], 1, 0.5)  # warm the connection path
        grpc_closed_loop(gport, grpc_request, 1, 0.5)
        for r in range(rounds):
            lat, stop = [], time.perf_counter() + seconds
            while time.perf_counter() < stop:
                t = time.perf_counter()
                session.run({"x": x})
                lat.append(time.perf_counter() - t)
            served = closed_loop(port, "/v2/models/tiny/infer", [body], 1, seconds)
            over_grpc = grpc_closed_loop(gport, grpc_request, 1, seconds)
            p50_in = float(np.percentile(np.array(lat) * 1e3, 50, method="linear"))
            p50_srv = float(np.percentile(served.latencies * 1e3, 50, method="linear"))
            p50_grpc = float(np.percentile(over_grpc.latencies * 1e3, 50, method="linear"))
            rows.append({"round": r, "inprocess_p50_ms": p50_in, "served_p50_ms": p50_srv,
                         "diff_ms": p50_srv - p50_in, "served_errors": served.errors,
                         "client_cpu_pct": served.summary()["client_cpu_pct"],
                         "grpc_p50_ms": p50_grpc, "grpc_diff_ms": p50_grpc - p50_in,
                         "grpc_errors": over_grpc.errors,
                         "grpc_client_cpu_pct": over_grpc.summary()["client_cpu_pct"]})
            print(f"  round {r}: in-process p50 {p50_in:.3f} ms, HTTP p50 {p50_srv:.3f} ms "
                  f"(+{p50_srv - p50_in:.3f}), gRPC p50 {p50_grpc:.3f} ms "
                  f"(+{p50_grpc - p50_in:.3f}); client CPU {rows[-1]['client_cpu_pct']:.0f}% "
                  f"/ {rows[-1]['grpc_client_cpu_pct']:.0f}%", flush=True)
    diff = float(np.median([r["diff_ms"] for r in rows]))
    grpc_diff = float(np.median([r["grpc_diff_ms"] for r in rows]))
    for label, value, target in (("HTTP JSON", diff, OVERHEAD_TARGET_MS),
                                 ("gRPC", grpc_diff, GRPC_OVERHEAD_TARGET_MS)):
        verdict = "met" if value <= target else "NOT met"
        print(f"{label} served p50 - in-process p50: median {value:.3f} ms over {rounds} "
              f"rounds (target <= {target} ms: {verdict})")
    return {"rounds": rows, "median_diff_ms": diff, "target_ms": OVERHEAD_TARGET_MS,
            "grpc_median_diff_ms": grpc_diff, "grpc_target_ms": GRPC_OVERHEAD_TARGET_MS}


def protocols(rounds: int, window: float, levels: list[int], work: Path) -> dict[str, Any]:
    """HTTP with binary tensors vs gRPC on one server, concurrency levels taking turns."""
    model = tiny_model(work / "tiny-p")
    rtinfer.save_artifact(model, work / "repo-p", "tiny")
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    binary = header + x.tobytes()
    grpc_request = grpc_infer_request("tiny", {"x": x})
    port, gport = free_port(), free_port()
    cmd = [python(), "-m", "rtinfer.cli", "serve", str(work / "repo-p"), "--port", str(port),
           "--threads", "1", "--grpc-port", str(gport)]
    results: dict[str, dict[int, Any]] = {"HTTP binary": {}, "gRPC": {}}
    headers = {"Inference-Header-Content-Length": str(len(header))}
    targets: dict[str, Load] = {
        "HTTP binary": lambda c, s: closed_loop(port, "/v2/models/tiny/infer", [binary], c, s,
                                                headers),
        "gRPC": lambda c, s: grpc_closed_loop(gport, grpc_request, c, s)}
    with child_server(cmd, port, "/v2/health/ready"):
        for level in levels:
            for label, res in interleaved(targets, level, rounds, window).items():
                results[label][level] = res
                s = res.summary()
                print(f"  {label:12s} concurrency {level:3d}: {s['throughput_rps']:7.1f} req/s "
                      f"p99 {s['latency_ms'].get('p99', float('nan')):6.2f} ms errors "
                      f"{res.errors} client CPU {s['client_cpu_pct']:.0f}%", flush=True)
    best = {label: best_under_bound(results[label], PROTOCOL_P99_MS) for label in results}
    http_rps, grpc_rps = best["HTTP binary"][1], best["gRPC"][1]
    ratio = grpc_rps / http_rps if http_rps else float("nan")
    for label, (conc, rps) in best.items():
        print(f"{label:12s} {rps:7.1f} req/s at p99 <= {PROTOCOL_P99_MS:g} ms "
              f"(concurrency {conc})")
    print(f"gRPC / HTTP binary: {ratio:.2f}x")
    return {"p99_bound_ms": PROTOCOL_P99_MS, "ratio_grpc_over_http": ratio,
            "best": {k: {"concurrency": c, "throughput_rps": t} for k, (c, t) in best.items()},
            "runs": {k: {c: r.summary() for c, r in v.items()} for k, v in results.items()}}


def engine_batching_gain(model: Any, engine: str | None, threads: int, rounds: int = 5,
                         sizes: tuple[int, ...] = (8, 32), tokens: int = 16) -> dict[str, Any]:
    """samples/s at each batch size over batch 1, in-process, the sizes taking turns."""
    from rtinfer.bench.inprocess import measure_batch

    with rtinfer.load(model, engine, threads=threads) as session:
        feeds = {b: {n: np.ones((b, tokens), np.int64) for n in session.spec.input_names}
                 for b in (1, *sizes)}
        rates: dict[int, list[float]] = {b: [] for b in feeds}
        for _ in range(rounds):
            for b, feed in feeds.items():
                row, _ = measure_batch(session, feed, window_s=0.4, peak_flops=1e12)
                rates[b].append(row["throughput"]["samples_per_s"])
        engine = session.engine
    gains = {b: float(np.median(np.array(rates[b]) / np.array(rates[1]))) for b in sizes}
    for b in sizes:
        print(f"  engine alone ({engine}, {threads} threads, {tokens} tokens): batch {b} "
              f"{np.median(rates[b]):.0f} samples/s vs batch 1 {np.median(rates[1]):.0f} "
              f"= {gains[b]:.2f}x")
    return {"engine": engine, "threads": threads, "tokens": tokens,
            "samples_per_s": {b: float(np.median(r)) for b, r in rates.items()},
            "gain_over_batch1": gains}


def batching(kit_size: str, rounds: int, window: float, levels: list[int], work: Path,
             threads_opt: int | None = None, precision: str = "fp32") -> dict[str, Any]:
    from rtinfer import kits
    from rtinfer.optimize import Quantize, quantize

    kit = kits.load("intent", size=kit_size)
    name = kit.model_path.parent.name
    served, engine = rtinfer.import_model(kit.model_path), None  # the server's default engine
    if precision == "int8":  # what `rtinfer quantize --kit intent` ships (issue 4)
        served, engine = quantize(served, Quantize(method="dynamic", engine="openvino")), \
            "openvino"
    sentences = [str(s) for s in kit.split("test").raw["sentence"][:512]]
    bodies = [json.dumps({"instances": [s]}).encode() for s in sentences]
    bound = kit.objective_p99_ms
    configs = {"no batching": ["--max-batch-size", "1"],
               "batching + length buckets": ["--max-batch-size", "32", "--max-queue-delay-us",
                                             "2000", "--length-buckets", "8,16,32,64"]}
    results: dict[str, dict[int, Any]] = {c: {} for c in configs}
    ports = {c: free_port() for c in configs}
    repos = {}
    for label in configs:
        repo = work / f"repo-{precision}-{len(repos)}"
        if engine is None:
            shutil.copytree(kit.model_path.parent, repo / name)
        else:
            rtinfer.save_artifact(served, repo, name, engine=engine)
        (repo / name / "rtinfer.json").write_text(json.dumps({"kit": "intent",
                                                              "kit_size": kit_size}))
        repos[label] = repo
    threads = str(threads_opt or usable_cores())
    ceiling = engine_batching_gain(served, engine, int(threads))
    with child_server([python(), "-m", "rtinfer.cli", "serve", str(repos["no batching"]),
                       "--port", str(ports["no batching"]), "--threads", threads,
                       *configs["no batching"]], ports["no batching"], "/v2/health/ready"), \
         child_server([python(), "-m", "rtinfer.cli", "serve",
                       str(repos["batching + length buckets"]), "--port",
                       str(ports["batching + length buckets"]), "--threads", threads,
                       *configs["batching + length buckets"]],
                      ports["batching + length buckets"], "/v2/health/ready"):
        targets = {label: (ports[label], f"/v1/models/{name}:predict", bodies)
                   for label in configs}
        for level in levels:  # the configurations take turns in short windows
            for label, res in interleaved(targets, level, rounds, window).items():
                results[label][level] = res
                s = res.summary()
                p99 = s["latency_ms"].get("p99", float("nan"))
                print(f"  {label:26s} concurrency {level:3d}: {s['throughput_rps']:7.1f} req/s "
                      f"p99 {p99:7.1f} ms errors {res.errors} client CPU "
                      f"{s['client_cpu_pct']:.0f}%", flush=True)
    best = {label: best_under_bound(results[label], bound) for label in configs}
    base, batched = best["no batching"][1], best["batching + length buckets"][1]
    ratio = batched / base if base else (float("inf") if batched else float("nan"))
    for label, (conc, rps) in best.items():
        print(f"{label:26s} {rps:7.1f} req/s at p99 <= {bound:g} ms (concurrency {conc})")
    verdict = "met" if ratio >= BATCHING_TARGET else "NOT met"  # nan: neither met the bound
    print(f"batching / no batching: {ratio:.2f}x (target >= {BATCHING_TARGET}x: {verdict}); "
          f"the engine alone gains {max(ceiling['gain_over_batch1'].values()):.2f}x from "
          "batching on this CPU")
    return {"p99_bound_ms": bound, "threads": int(threads), "engine_alone": ceiling,
            "best": {k: {"concurrency": c, "throughput_rps": t} for k, (c, t) in best.items()},
            "ratio": ratio, "target": BATCHING_TARGET,
            "runs": {k: {c: r.summary() for c, r in v.items()} for k, v in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per window")
    parser.add_argument("--kit-size", default="small", choices=["small", "full"])
    parser.add_argument("--window", type=float, default=0.5,
                        help="batching: seconds per window, configurations taking turns")
    parser.add_argument("--levels", default="1,4,8,16,32,64")
    parser.add_argument("--only", choices=["overhead", "protocols", "batching"])
    parser.add_argument("--threads", type=int, help="batching: intra-op threads of both "
                        "servers (default: usable cores)")
    parser.add_argument("--precision", default="fp32,int8",
                        help="batching: the kit's float model and/or its int8 artifact "
                        "(OpenVINO, int8 weights, run-time activation quantization)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = environment()
    print(f"CPU: {env.get('cpu', {}).get('model', '?')}, usable cores {usable_cores()}; "
          f"percentiles: {ESTIMATOR}")
    out: dict[str, Any] = {"environment": env}
    with tempfile.TemporaryDirectory(prefix="rtinfer-bench-") as tmp:
        if args.only in (None, "overhead"):
            print("1. serving overhead, tiny MLP, batch 1, 1 thread")
            out["overhead"] = overhead(args.rounds, args.seconds, Path(tmp))
        if args.only in (None, "protocols"):
            print("1b. HTTP binary vs gRPC, tiny MLP, batch 1, 1 thread")
            out["protocols"] = protocols(args.rounds, args.window, [1, 4, 16, 64], Path(tmp))
        if args.only in (None, "batching"):
            out["batching"] = {}
            for precision in args.precision.split(","):
                print(f"2. intent kit ({precision}): dynamic batching with length buckets vs "
                      "none")
                out["batching"][precision] = batching(
                    args.kit_size, args.rounds, args.window,
                    [int(v) for v in args.levels.split(",")], Path(tmp), args.threads,
                    precision)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
