"""What the serving benchmarks share: servers as child processes, and a lean closed-loop HTTP
load generator (asyncio streams, keep-alive connections) that records its own CPU use.

The load generator is deliberately small: the MLPerf LoadGen driver is ``rtinfer bench``'s job.
Latency is measured per request from just before its bytes are written to the end of its body
(closed loop: each of ``concurrency`` connections sends its next request when the previous
one is answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtinfer.bench.stats import ESTIMATOR, latency_summary
from rtinfer.bench.targets import wait_until_ready
from rtinfer.errors import TargetError


def ort_session(model: str, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, as a peer holds it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


@contextmanager
def child_server(cmd: Sequence[str], port: int, probe: str,
                 env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (a server on ``port``) until ``probe`` answers 200; stop it on exit."""
    # A session of its own: servers that fork workers (LitServe) are stopped as a group.
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", 180,
                             alive=lambda: proc.poll() is None, path=probe)
        except TargetError:
            if proc.poll() is not None and proc.stderr:
                raise RuntimeError(f"{cmd[:4]} exited: {proc.stderr.read().decode()[-2000:]}"
                                   ) from None
            raise
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@dataclass
class LoadResult:
    latencies: np.ndarray   # seconds, one per successful request
    errors: int
    seconds: float
    client_cpu_s: float     # this process's CPU time during the run
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count; 0: no answer

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def summary(self) -> dict[str, Any]:
        lat = latency_summary(self.latencies) if len(self.latencies) else {"n": 0}
        return {"throughput_rps": self.throughput, "errors": self.errors,
                "client_cpu_pct": 100 * self.client_cpu_s / self.seconds,
                "latency_ms": lat, "estimator": ESTIMATOR}


def closed_loop(port: int, path: str, bodies: Sequence[bytes], concurrency: int,
                seconds: float, headers: dict[str, str] | None = None,
                survive_disconnects: bool = False) -> LoadResult:
    """``concurrency`` keep-alive connections POSTing ``bodies`` in turn for ``seconds``.
    With ``survive_disconnects`` a connection the server closes (or refuses) is counted as
    status 0 and opened again, instead of ending the run with an error."""
    return asyncio.run(_closed_loop(port, path, bodies, concurrency, seconds, headers or {},
                                    survive_disconnects))


async def _closed_loop(port: int, path: str, bodies: Sequence[bytes], concurrency: int,
                       seconds: float, headers: dict[str, str],
                       survive_disconnects: bool = False) -> LoadResult:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 f"\r\n{extra}Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if not survive_disconnects:
                    raise
                statuses[0] = statuses.get(0, 0) + 1
                await asyncio.sleep(0.05)
                continue
            try:
                while time.perf_counter() < stop:
                    start = time.perf_counter()
                    writer.write(requests[i % len(requests)])
                    status, length, chunked = 0, 0, False
                    line = await reader.readline()
                    status = int(line.split()[1])
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        key, _, value = line.decode("latin-1").partition(":")
                        if key.lower() == "content-length":
                            length = int(value)
                        elif key.lower() == "transfer-encoding":
                            chunked = "chunked" in value.lower()
                    if chunked:  # Ray Serve's proxy streams some answers in chunks
                        while size := int((await reader.readline()).split(b";")[0], 16):
                            await reader.readexactly(size + 2)
                        await reader.readline()  # the blank line after the last chunk
                    else:
                        await reader.readexactly(length)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1
                    i += concurrency
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
                if not survive_disconnects:
                    raise
                statuses[0] = statuses.get(0, 0) + 1  # closed by the server mid-request
            finally:
                writer.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return LoadResult(np.array(latencies), errors, time.perf_counter() - t0,
                      time.process_time() - cpu0, statuses)


def grpc_infer_request(model: str, feeds: dict[str, np.ndarray]) -> bytes:
    """A serialized ``ModelInferRequest`` (raw input buffers, as tritonclient sends them)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, value in feeds.items():
        datatype = {"float32": "FP32", "int64": "INT64"}[value.dtype.name]
        request.inputs.add(name=name, datatype=datatype, shape=list(value.shape))
        request.raw_input_contents.append(np.ascontiguousarray(value).tobytes())
    return bytes(request.SerializeToString())


def grpc_closed_loop(port: int, request: bytes, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` callers sending the serialized ``request`` over one gRPC channel (one
    HTTP/2 connection, as tritonclient uses), each sending again when answered. Requests and
    answers stay bytes: the client pays no protobuf decoding, as the HTTP loop parses no JSON."""
    return asyncio.run(_grpc_closed_loop(port, request, concurrency, seconds))


async def _grpc_closed_loop(port: int, request: bytes, concurrency: int,
                            seconds: float) -> LoadResult:
    import grpc

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def worker() -> None:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    await call(request)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().value[0]
                    statuses[code] = statuses.get(code, 0) + 1
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[200] = statuses.get(200, 0) + 1

        await call(request)  # the channel's connection is set up before the clock starts
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    errors = sum(v for k, v in statuses.items() if k != 200)
    return LoadResult(np.array(latencies), errors, took, cpu, statuses)


#: One window of load: (concurrency, seconds) -> its result (closed_loop, grpc_closed_loop, …).
Load = Callable[[int, float], LoadResult]


def interleaved(targets: dict[str, tuple[int, str, Sequence[bytes]] | Load], concurrency: int,
                rounds: int, window_s: float) -> dict[str, LoadResult]:
    """Each target loaded for ``rounds`` short windows, the targets taking turns, so that
    background load on a shared machine falls on all alike; each target's windows are pooled
    into one result. A target is (port, path, bodies) for :func:`closed_loop`, or any
    :data:`Load` function (another protocol's load generator)."""
    runs: dict[str, list[LoadResult]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(rounds):
        # The order rotates: the window right after another server's runs slower (its
        # threads still wind down), and that penalty must fall on every server alike.
        for name in names[r % len(names):] + names[:r % len(names)]:
            target = targets[name]
            if callable(target):
                runs[name].append(target(concurrency, window_s))
            else:
                port, path, bodies = target
                runs[name].append(closed_loop(port, path, bodies, concurrency, window_s))
    return {name: LoadResult(np.concatenate([r.latencies for r in rs]),
                             sum(r.errors for r in rs), sum(r.seconds for r in rs),
                             sum(r.client_cpu_s for r in rs))
            for name, rs in runs.items()}


def best_under_bound(results: dict[int, LoadResult], p99_ms: float) -> tuple[int, float]:
    """(concurrency, throughput) of the highest-throughput run whose p99 <= ``p99_ms`` and
    that had no errors; (0, 0.0) when none qualifies."""
    ok = [(r.throughput, c) for c, r in results.items()
          if len(r.latencies) and not r.errors
          and np.percentile(r.latencies * 1e3, 99, method="linear") <= p99_ms]
    if not ok:
        return 0, 0.0
    rps, conc = max(ok)
    return conc, rps


def python() -> str:
    return sys.executable
