"""rtinfer on Ray Serve vs rtinfer serve alone vs Ray Serve's own pattern: one run, interleaved.

    python benchmarks/ray_serving.py [--rounds 6] [--window 2] [--concurrency 8]
        [--p99-ms 50] [--json out.json]

Model: a medium MLP 256-1024-1024-1024-10 (seeded random weights, exported to ONNX here), one
sample per JSON request (TF Serving's ``{"instances": [[...]]}``), ONNX Runtime with 1 thread
everywhere. Servers, all up at once on loopback, taking turns in ``--window`` s windows
(``--rounds``, rotating order, pooled per server):

* ``rtinfer serve``: a child process, dynamic batching at most 8 rows, 300 µs queue delay;
* ``rtinfer on Ray``: the same server as one Ray Serve replica (``rtinfer.scale.ray_serve``),
  behind Ray's default proxy; then with 2 replicas (phase 2, on the same cluster);
* ``Ray Serve's pattern``: ``@serve.deployment`` + ``@serve.batch(max_batch_size=8,
  batch_wait_timeout_s=0.0003)`` around the same ONNX Runtime session, as Ray's docs show
  it, behind the same proxy (``/peer``).

One local Ray cluster (``ray start --head``, 4 logical CPUs on this machine's cores) holds
both Ray applications. The client is the closed-loop asyncio client of ``_serving.py`` at
``--concurrency`` connections. It shares the cores with the servers, so its own CPU use is
reported. Latency percentiles: numpy linear (type 7). Goal (issue 21): rtinfer on Ray with one
replica at >= 0.7x ``rtinfer serve`` alone. On 2 cores replicas cannot add throughput; the
2-replica figure shows the proxy's cost, not scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _serving as srv
from rtinfer.serve.inthread import free_port

ROWS = 8
RAY = str(Path(sys.executable).parent / "ray")  # the CLI installed beside this Python
DELAY_US = 300


def medium_mlp(folder: Path) -> Path:
    import torch

    import rtinfer

    torch.manual_seed(0)
    layers: list[Any] = []
    for a, b in ((256, 1024), (1024, 1024), (1024, 1024)):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    module = torch.nn.Sequential(*layers, torch.nn.Linear(1024, 10)).eval()
    model = rtinfer.import_model(module, {"input": np.zeros((1, 256), np.float32)})
    return Path(rtinfer.save_artifact(model, folder / "repo", "mlp").path)


def ray_pattern(model: str) -> Any:
    """Ray Serve's documented batching pattern around one ONNX Runtime session."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
    class OnnxModel:
        def __init__(self, path: str) -> None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.name = self.session.get_inputs()[0].name

        @serve.batch(max_batch_size=ROWS, batch_wait_timeout_s=DELAY_US / 1e6)
        async def run(self, rows: list[np.ndarray]) -> list[list[float]]:
            out = self.session.run(None, {self.name: np.concatenate(rows)})[0]
            return [row.tolist() for row in out]

        async def __call__(self, request: Request) -> dict[str, Any]:
            body = await request.json()
            x = np.asarray(body["instances"], dtype=np.float32)
            return {"predictions": [await self.run(x)]}

    return OnnxModel.bind(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--p99-ms", type=float, default=50.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import ray
    from ray import serve

    from rtinfer.hardware import cpu_info
    from rtinfer.scale.ray_serve import application

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    artifact = medium_mlp(work)
    repo = artifact.parent.parent
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    bodies = [json.dumps({"instances": [row.tolist()]}).encode() for row in x]
    alone_port, ray_port, gcs_port = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "start", "--head", f"--port={gcs_port}", "--num-cpus=4",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True,
                   env=env, capture_output=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        ray.init(address=f"127.0.0.1:{gcs_port}", logging_level="WARNING", log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": ray_port})
        settings = {"repo": str(repo), "drain_timeout_s": 5.0, "api_key": None,
                    "max_body_bytes": 1 << 20, "poll_interval_s": 0.0,
                    "overrides": {"threads": 1, "max_batch_size": ROWS,
                                  "max_queue_delay_us": DELAY_US}}
        serve.run(ray_pattern(str(artifact / "model.onnx")), name="peer", route_prefix="/peer")
        cmd = [sys.executable, "-m", "rtinfer.cli", "serve", str(repo), "--port",
               str(alone_port), "--threads", "1", "--max-batch-size", str(ROWS),
               "--max-queue-delay-us", str(DELAY_US)]
        path = "/v1/models/mlp:predict"
        with srv.child_server(cmd, alone_port, "/v2/health/ready"):
            for replicas in (1, 2):
                serve.run(application(settings, replicas=replicas), name="rtinfer",
                          route_prefix="/")
                time.sleep(2)
                targets: dict[str, Any] = {
                    "rtinfer serve": (alone_port, path, bodies),
                    f"rtinfer on Ray, {replicas} replica(s)": (ray_port, path, bodies)}
                if replicas == 1:
                    targets["Ray Serve's pattern"] = (ray_port, "/peer", bodies)
                for target in targets.values():  # warm every path before measuring
                    srv.closed_loop(*target, args.concurrency, 1.0)
                pooled = srv.interleaved(targets, args.concurrency, args.rounds, args.window)
                for name, result in pooled.items():
                    key = name if name != "rtinfer serve" else f"rtinfer serve (phase {replicas})"
                    results[key] = result.summary()
    finally:
        serve.shutdown()
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    info = cpu_info()
    print(f"CPU: {info.model} ({info.usable_cores} usable cores); ONNX Runtime 1 thread per "
          f"server; client: closed loop, {args.concurrency} connections; percentiles numpy "
          "linear; the machine is shared: figures are noisy unless it was quiet")
    print(f"{'server':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'client CPU':>10} {'vs alone':>9}")
    for name, r in results.items():
        phase = 2 if "2 replica" in name or "phase 2" in name else 1
        alone = results[f"rtinfer serve (phase {phase})"]["throughput_rps"]
        lat = r["latency_ms"]
        print(f"{name:34} {r['throughput_rps']:9.0f} {lat.get('p50', float('nan')):8.2f} "
              f"{lat.get('p99', float('nan')):8.2f} {r['errors']:7d} "
              f"{r['client_cpu_pct']:9.0f}% {r['throughput_rps'] / alone:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "cpu": info.model,
                                         "concurrency": args.concurrency}, indent=2))


if __name__ == "__main__":
    main()
