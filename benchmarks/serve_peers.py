"""rtinfer serve against a peer server, measured by the same command (`rtinfer bench URL`).

    python benchmarks/serve_peers.py --peer-python results/kserve-venv/bin/python

The peer is KServe's own Python model server (PyPI `kserve`, see kserve_peer.py) serving the
same ONNX file on ONNX Runtime with the same thread budget; both speak the Open Inference
Protocol (KServe v2 REST) and get the same binary-encoded requests. `kserve` pins psutil<6, so
it lives in its own virtual environment that sees this one's packages:

    python3.11 -m venv results/kserve-venv
    echo "$(python -c 'import site; print(site.getsitepackages()[0])')" \\
        > results/kserve-venv/lib/python3.11/site-packages/zz_rtinfer.pth
    results/kserve-venv/bin/pip install kserve

Both servers start on loopback, get the same ladder of offered loads (server scenario,
Poisson arrivals, interleaved: A, B, A, B, … so drift on a shared machine hits both), and are
stopped at the end. Results, LoadGen logs and `report.html` go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rtinfer(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "rtinfer.cli", *args], env=env, text=True,
                          capture_output=True, timeout=600, check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True, help="Python with kserve installed")
    p.add_argument("--kit", default="perception")
    p.add_argument("--qps", default="", help="comma-separated loads (default: from capacity)")
    p.add_argument("--slo-p99-ms", type=float, default=None)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "peers")
    args = p.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from rtinfer import kits
    from rtinfer.bench.targets import wait_until_ready
    from rtinfer.deploy.artifact import load_artifact
    from rtinfer.serve.inthread import free_port

    kit = kits.load(args.kit, build=False)
    art = load_artifact(kit.model_path)
    slo = args.slo_p99_ms or kit.objective_p99_ms
    args.out.mkdir(parents=True, exist_ok=True)
    ports = {"rtinfer": free_port(), "kserve": free_port()}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = {
        "rtinfer": subprocess.Popen(
            [sys.executable, "-m", "rtinfer.cli", "serve", str(kit.model_path.parent),
             "--port", str(ports["rtinfer"]), "--threads", str(args.threads)], env=env),
        "kserve": subprocess.Popen(
            [args.peer_python, str(ROOT / "benchmarks" / "kserve_peer.py"), str(art.model.path),
             "--name", art.name, "--port", str(ports["kserve"]), "--grpc-port",
             str(free_port()), "--threads", str(args.threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    urls = {k: f"http://127.0.0.1:{port}" for k, port in ports.items()}
    try:
        for name, url in urls.items():
            wait_until_ready(url, 120, alive=lambda p=procs[name]: p.poll() is None)
        common = ["--kit", args.kit, "--slo-p99-ms", str(slo), "--encoding", "binary", "-q"]
        if args.qps:
            ladder = [float(q) for q in args.qps.split(",")]
        else:  # the ladder brackets rtinfer's single-connection capacity
            path = args.out / "capacity.json"
            r = rtinfer("bench", f"{urls['rtinfer']}/v2/models/{art.name}", "--scenario",
                        "single-stream", "--duration", "2", "--json", str(path), *common)
            if r.returncode:
                raise RuntimeError(r.stderr)
            cap = json.loads(path.read_text())["throughput"]["samples_per_s"]
            ladder = [round(f * cap) for f in (0.25, 0.5, 0.75, 1.0, 1.5)]
        paths = []
        for qps in ladder:
            for name, url in urls.items():
                path = args.out / f"{name}-{qps:g}.json"
                r = rtinfer("bench", f"{url}/v2/models/{art.name}", "--scenario", "server",
                            "--qps", f"{qps:g}", "--duration", str(args.duration), "--name",
                            "rtinfer serve" if name == "rtinfer" else "kserve ModelServer",
                            "--json", str(path), *common)
                if r.returncode:
                    raise RuntimeError(r.stderr)
                paths.append(path)
                res = json.loads(path.read_text())
                print(f"{name:8s} {qps:7g} QPS: {res['validity']:7s} p50 "
                      f"{res['latency_ms']['p50']:8.2f} ms  p99 {res['latency_ms']['p99']:9.2f} "
                      f"ms  {res['throughput']['samples_per_s']:7.1f}/s  server CPU "
                      f"{res['resources']['target']['cpu_percent']:4.0f}%  client CPU "
                      f"{res['resources']['client']['cpu_percent']:4.0f}%  "
                      f"{'; '.join(res['warnings'])[:80]}", flush=True)
        r = rtinfer("report", *map(str, paths), "--html", str(args.out / "report.html"),
                    "--title", f"rtinfer serve vs kserve ({args.kit}, p99 ≤ {slo:g} ms)")
        print(r.stdout.strip() or r.stderr.strip())
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
