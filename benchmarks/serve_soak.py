"""Soak `rtinfer serve` as an operator would see it fail: overload, reload under load with
corrupt versions, 50 unload/load cycles, SIGTERM under load. Prints the answers counted by
status, the admitted requests' p99 against the queue's bound, the server's RSS before and
after the cycles, and its exit status; writes them to results/serve_soak.json.

    python benchmarks/serve_soak.py [--cycles 50] [--seconds 5]

The server is a child process (`rtinfer serve`, one worker, 1 intra-op thread, queue of 16);
the load generator is this process (closed loop, keep-alive connections; its own CPU use is
reported, since it shares the machine's cores with the server). Status 0 counts requests
that got no answer (a connection refused or closed), which is expected only after SIGTERM.
Latencies: numpy's linear percentile (Hyndman-Fan type 7).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from _serving import LoadResult, child_server, closed_loop, python
from rtinfer.bench.stats import ESTIMATOR
from rtinfer.hardware import cpu_info
from rtinfer.serve.inthread import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
from hostile_models import build_big_model, build_repository, mixed_request

KEY = "soak-key"
QUEUE = 16


def _post(port: int, path: str, body: bytes = b"") -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"X-API-Key": KEY})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _report(name: str, result: LoadResult, bound_ms: float | None = None) -> dict[str, Any]:
    ok = result.latencies * 1e3
    row: dict[str, Any] = {"statuses": {str(k): v for k, v in sorted(result.statuses.items())},
                           "answered_per_s": round(sum(result.statuses.values()) /
                                                   result.seconds, 1),
                           "client_cpu_pct": round(100 * result.client_cpu_s / result.seconds,
                                                   1)}
    if len(ok):
        row["admitted_p50_ms"] = round(float(np.percentile(ok, 50, method="linear")), 2)
        row["admitted_p99_ms"] = round(float(np.percentile(ok, 99, method="linear")), 2)
    if bound_ms is not None:
        row["queue_bound_ms"] = round(bound_ms, 2)
    print(f"{name:<28} {json.dumps(row)}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtinfer-soak-"))
    repo = build_repository(work / "repo")
    build_big_model(repo / "big")
    (work / "key").write_text(KEY)
    port = free_port()
    cmd = [python(), "-m", "rtinfer.cli", "serve", str(repo), "--port", str(port),
           "--threads", "1", "--max-queue-size", str(QUEUE), "--poll-s", "0.5",
           "--api-key-file", str(work / "key"), "--drain-s", "10"]
    headers = {"X-API-Key": KEY}
    mixed = [json.dumps(mixed_request()).encode()]
    big = [json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2048],
                                   "data": [0.5] * 2048}]}).encode()]
    out: dict[str, Any] = {"cpu": cpu_info().model, "flags": list(cpu_info().flags),
                           "estimator": ESTIMATOR, "threads": 1, "queue": QUEUE,
                           "load": "closed loop, keep-alive"}
    print(f"CPU: {out['cpu']}; server: 1 worker, 1 intra-op thread, queue {QUEUE}")
    with child_server(cmd, port, "/v2/health/ready") as proc:
        server = psutil.Process(proc.pid)
        alone = closed_loop(port, "/v2/models/big/infer", big, 1, 2.0, headers)
        service_ms = float(np.percentile(alone.latencies * 1e3, 50, method="linear"))
        out["service_p50_ms"] = round(service_ms, 2)
        # Overload: 4x more connections than the queue holds. An admitted request waits for
        # at most QUEUE others, so its latency is bounded by (QUEUE + 1) service times.
        over = closed_loop(port, "/v2/models/big/infer", big, 4 * QUEUE, args.seconds,
                           headers, survive_disconnects=True)
        out["overload"] = _report("overload (64 connections)", over,
                                  (QUEUE + 1) * service_ms)
        # The same bound at the service time achieved under overload: the loop's time spent
        # answering rejections (and the client, on the same cores) slows every request.
        achieved_ms = 1e3 * over.seconds / max(1, len(over.latencies))
        out["overload"]["queue_bound_at_achieved_rate_ms"] = round((QUEUE + 1) * achieved_ms, 1)
        print(f"{'':<28} bound at the achieved rate: {(QUEUE + 1) * achieved_ms:.0f} ms "
              f"({achieved_ms:.1f} ms per admitted request under overload, "
              f"{service_ms:.1f} ms alone)")

        # Reload under load: versions 2 (corrupt), 3 (valid) appear, then 3 is removed.
        def churn() -> None:
            time.sleep(0.5)
            (repo / "mixed" / "2").mkdir()
            (repo / "mixed" / "2" / "model.onnx").write_bytes(b"not an onnx model" * 100)
            time.sleep(1.5)
            shutil.copytree(repo / "mixed" / "1", repo / "mixed" / "3")
            time.sleep(1.5)
            shutil.rmtree(repo / "mixed" / "3")
            shutil.rmtree(repo / "mixed" / "2")

        changer = threading.Thread(target=churn)
        changer.start()
        reload = closed_loop(port, "/v2/models/mixed/infer", mixed, 8,
                             max(args.seconds, 5.0), headers, survive_disconnects=True)
        changer.join()
        out["reload_with_corrupt_versions"] = _report("reload, corrupt versions", reload)

        rss_mb = {0: server.memory_info().rss >> 20}
        codes: dict[int, int] = {}
        for cycle in range(1, args.cycles + 1):
            for action in ("unload", "load"):
                code = _post(port, f"/v2/repository/models/big/{action}")
                codes[code] = codes.get(code, 0) + 1
            if cycle % 10 == 0 or cycle == args.cycles:
                rss_mb[cycle] = server.memory_info().rss >> 20
        out["cycles"] = {"count": args.cycles, "statuses": {str(k): v for k, v in codes.items()},
                         "rss_mb_after_cycle": rss_mb}
        print(f"{'unload/load cycles':<28} {json.dumps(out['cycles'])}")

        # SIGTERM under load: in-flight requests finish, new ones are refused, exit 0.
        def stop() -> None:
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)

        stopper = threading.Thread(target=stop)
        stopper.start()
        term = closed_loop(port, "/v2/models/mixed/infer", mixed, 8, 3.0, headers,
                           survive_disconnects=True)
        stopper.join()
        code = proc.wait(timeout=30)
        out["sigterm_under_load"] = {**_report("SIGTERM under load", term), "exit_status": code}
        print(f"{'server exit status':<28} {code}")
    results = Path(__file__).resolve().parents[1] / "results"
    results.mkdir(exist_ok=True)
    (results / "serve_soak.json").write_text(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    allowed = {"overload": {"200", "503"}, "reload_with_corrupt_versions": {"200"}}
    bad = [k for k, ok in allowed.items() if set(out[k]["statuses"]) - ok]
    if bad or code != 0:
        sys.exit(f"soak found faults in {bad}; server exit status {code}")


if __name__ == "__main__":
    main()
