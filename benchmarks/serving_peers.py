"""rtinfer serve vs established Python servers: the same ONNX model, the same load, one run.

    pip install --target /tmp/serve-peers --no-deps litserve==0.2.19 fastapi pyzmq \\
        opentelemetry-api          # the peers, kept out of rtinfer's environment
    PEERS=/tmp/serve-peers python benchmarks/serving_peers.py [--model model.onnx]
        [--p99-ms 30] [--window 0.5] [--rounds 6] [--levels 1,4,16,64] [--json out.json]

Servers, each a child process on loopback serving one ONNX Runtime session with all usable
cores as intra-op threads, under uvicorn with the same HTTP stack (httptools, uvloop):

* ``rtinfer`` — ``rtinfer serve`` with dynamic batching (max 32 rows, queue delay 0: a batch
  is whatever queued while the previous one ran), TF Serving's ``:predict`` route.
* ``litserve`` — LitServe 0.2.19, ``LitAPI(max_batch_size=32, batch_timeout=0.001)``
  (its batching on; a timeout of 0 would never batch), numpy batch/unbatch.
* ``fastapi`` — a plain FastAPI app as its docs suggest: a sync ``def`` route (run in
  FastAPI's thread pool) calling ``session.run`` per request.

Every server gets the same body, ``{"instances": [one example]}``, and answers
``{"predictions": …}``. Load: closed loop at rising concurrency; at each level the servers
take turns in short windows (``--rounds`` x ``--window`` s each, pooled per server), so that
the background load of a shared machine falls on all of them alike. The figure is the
throughput of the highest level whose p99 (numpy linear) stays under ``--p99-ms`` without
errors. Default model: the perception kit's CNN (3x32x32 digits). The client shares the CPU
with the servers; its CPU use is printed. Goal: rtinfer >= 1.5x the best peer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

import _serving as srv
from rtinfer.serve.inthread import free_port

GOAL = 1.5


def run_fastapi(model: str, port: int, threads: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    session = srv.ort_session(model, threads)
    name = session.get_inputs()[0].name
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        x = np.asarray(body["instances"], dtype=np.float32)
        return {"predictions": session.run(None, {name: x})[0].tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_litserve(model: str, port: int, threads: int) -> None:
    import litserve as ls

    api = OnnxAPI(max_batch_size=32, batch_timeout=0.001)
    api.model_path, api.threads = model, threads  # pickled to LitServe's worker process
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


try:  # LitServe pickles the API into a spawned worker: the class must live at module level
    import litserve as _litserve
except ImportError:  # the parent process does not need it
    _litserve = None

if _litserve is not None:
    class OnnxAPI(_litserve.LitAPI):  # type: ignore[misc,name-defined]
        """One ONNX Runtime session; numpy batch/unbatch."""

        model_path: str
        threads: int

        def setup(self, device: str) -> None:
            self.session = srv.ort_session(self.model_path, self.threads)
            self.name = self.session.get_inputs()[0].name

        def decode_request(self, request):  # type: ignore[no-untyped-def]
            # unannotated: LitServe would read an annotation as a query-parameter schema
            return np.asarray(request["instances"], dtype=np.float32)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(None, {self.name: x})[0]

        def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
            return [row[None] for row in output]

        def encode_response(self, output: np.ndarray) -> dict[str, Any]:
            return {"predictions": output.tolist()}


def default_model(work: Path) -> Path:
    from rtinfer import kits

    kit = kits.load("perception", size="small")
    return kit.model_path / "model.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="ONNX file (default: perception kit CNN)")
    parser.add_argument("--p99-ms", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=0.5, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=6,
                        help="windows per server per level, servers taking turns")
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peer", choices=["fastapi", "litserve"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:  # a child process: serve and never return
        {"fastapi": run_fastapi, "litserve": run_litserve}[args.peer](
            str(args.model), args.port, args.threads)
        return

    import rtinfer
    from rtinfer.bench.stats import ESTIMATOR
    from rtinfer.hardware import environment, usable_cores

    threads = usable_cores()
    peers_path = os.environ.get("PEERS", "")
    child_env = {"PYTHONPATH": os.pathsep.join(p for p in (peers_path, *sys.path) if p)}
    env = environment()
    print(f"CPU: {env['cpu']['model']}, usable cores {threads}; intra-op threads {threads}; "
          f"percentiles: {ESTIMATOR}")
    with tempfile.TemporaryDirectory(prefix="rtinfer-peers-") as tmp:
        work = Path(tmp)
        model = args.model or default_model(work)
        imported = rtinfer.import_model(model)
        rtinfer.save_artifact(imported, work / "repo", "model")
        spec = imported.spec.inputs[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        rng = np.random.default_rng(0)
        bodies = [json.dumps({"instances": rng.standard_normal(shape).astype(np.float32)
                              .tolist()}).encode() for _ in range(16)]
        ports = {name: free_port() for name in ("rtinfer", "litserve", "fastapi")}
        me = [srv.python(), str(Path(__file__).resolve()), "--model", str(model), "--threads",
              str(threads)]
        commands = {
            "rtinfer": ([srv.python(), "-m", "rtinfer.cli", "serve", str(work / "repo"), "--port",
                         str(ports["rtinfer"]), "--threads", str(threads), "--max-batch-size",
                         "32", "--max-queue-delay-us", "0"], "/v2/health/ready",
                        "/v1/models/model:predict"),
            "litserve": ([*me, "--peer", "litserve", "--port", str(ports["litserve"])],
                         "/health", "/predict"),
            "fastapi": ([*me, "--peer", "fastapi", "--port", str(ports["fastapi"])],
                        "/health", "/predict"),
        }
        results: dict[str, dict[int, Any]] = {name: {} for name in commands}
        levels = [int(v) for v in args.levels.split(",")]
        with ExitStack() as servers:  # all up at once; idle ones wait on their sockets
            for name, (cmd, probe, path) in commands.items():
                servers.enter_context(srv.child_server(cmd, ports[name], probe, child_env))
                srv.closed_loop(ports[name], path, bodies, 4, 1.0)  # warm every code path
            targets = {name: (ports[name], path, bodies)
                       for name, (_, _, path) in commands.items()}
            for level in levels:
                for name, res in srv.interleaved(targets, level, args.rounds, args.window).items():
                    results[name][level] = res
                    _report(name, level, res)
    _summarise(results, args, model, env, threads)


def _report(name: str, level: int, res: Any) -> None:
    s = res.summary()
    p99 = s["latency_ms"].get("p99", float("nan"))
    print(f"  {name:9s} concurrency {level:3d}: {s['throughput_rps']:8.1f} req/s "
          f"p99 {p99:7.2f} ms errors {res.errors} client CPU {s['client_cpu_pct']:.0f}%",
          flush=True)


def _summarise(results: dict[str, dict[int, Any]], args: Any, model: Path,
               env: dict[str, Any], threads: int) -> None:
    best = {name: srv.best_under_bound(r, args.p99_ms) for name, r in results.items()}
    print(f"\nthroughput at p99 <= {args.p99_ms:g} ms ({model.name}):")
    for name, (conc, rps) in best.items():
        print(f"  {name:9s} {rps:8.1f} req/s (concurrency {conc})")
    top_peer = max(rps for name, (_, rps) in best.items() if name != "rtinfer")
    mine = best["rtinfer"][1]
    ratio = mine / top_peer if top_peer else (float("inf") if mine else float("nan"))
    note = " (no peer met the bound)" if not top_peer and mine else ""
    print(f"rtinfer / best peer: {ratio:.2f}x (goal >= {GOAL}x: "
          f"{'met' if ratio >= GOAL else 'NOT met'}){note}")
    print("throughput ratio at each concurrency, rtinfer / best peer at that level:")
    for level in results["rtinfer"]:
        peer = max(r[level].throughput for n, r in results.items() if n != "rtinfer")
        print(f"  {level:3d}: {results['rtinfer'][level].throughput / peer:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "environment": env, "p99_bound_ms": args.p99_ms, "threads": threads,
            "best": {k: {"concurrency": c, "throughput_rps": t} for k, (c, t) in best.items()},
            "ratio_vs_best_peer": ratio,
            "runs": {k: {c: r.summary() for c, r in v.items()} for k, v in results.items()}},
            indent=2, default=str))


if __name__ == "__main__":
    main()
