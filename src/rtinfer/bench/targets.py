"""What a load test drives: a model run in this process, or a server over HTTP.

    target = open_target("repo/intent")                              # in-process, engines
    target = open_target("http://127.0.0.1:8000/v2/models/intent")   # KServe v2 (OIP) server
    target = open_target("http://127.0.0.1:8501/v1/models/intent")   # TF Serving REST server
    target = open_target("grpc://127.0.0.1:8001/intent")             # KServe v2 over gRPC
    target.run({"input_ids": ids, ...})                               # blocking; raises on error

Every target answers one blocking ``run(feeds)``; the load driver calls it from
``target.concurrency`` worker threads, so a server sees that many requests in flight at most.
HTTP targets keep one persistent (keep-alive) connection per worker thread: opening a TCP
connection per request would measure the client's handshakes, not the server. The gRPC target
keeps one channel (tritonclient's), whose HTTP/2 connection carries every worker's calls.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from http.client import HTTPConnection
from typing import Any

import numpy as np

from rtinfer.errors import TargetError
from rtinfer.spec import ModelSpec, TensorSpec

__all__ = ["GrpcTarget", "InProcessTarget", "KServeTarget", "TFServingTarget", "Target",
           "open_target", "wait_until_ready"]


class Target(ABC):
    """A system under test: ``run(feeds)`` blocks until the answer is back."""

    kind = "target"
    spec: ModelSpec | None = None  # when known: used for synthetic samples
    concurrency = 1                # worker threads the driver runs against this target
    pid: int | None = None         # process doing the work (None: this process)

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> None: ...

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "concurrency": self.concurrency}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the target holds."""

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessTarget(Target):
    """A model on rtinfer's engines in this process: ``instances`` sessions, each with
    ``threads`` intra-op threads, and optionally rtinfer's dynamic batcher in front of each.

    Without batching a worker thread per instance takes a free session and runs one request;
    with batching, requests go to an instance's :class:`~rtinfer.serve.batcher.Batcher` on a
    private event loop, and enough workers wait to let batches form.
    """

    kind = "in-process"

    def __init__(self, model: Any, *, engine: str | None = None, threads: int | None = None,
                 instances: int = 1, batching: Any = None, workers: int | None = None) -> None:
        from rtinfer.engines import load

        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.sessions = [load(model, engine, threads, warmup=True) for _ in range(instances)]
        self.spec = self.sessions[0].spec
        self.batching = batching
        self._free: queue.Queue[Any] = queue.Queue()
        for s in self.sessions:
            self._free.put(s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: Any = None
        if batching is not None:
            from rtinfer.serve.batcher import Batcher

            self._loop = asyncio.new_event_loop()
            # The batchers run the engine through the loop's default executor; start its
            # threads now, so the resource monitor counts them as the target's, not as
            # threads born during the run (the load generator's).
            n = len(self.sessions)
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="rtinfer-engine")
            barrier = threading.Barrier(n)
            list(self._pool.map(lambda _: barrier.wait(timeout=30), range(n)))
            self._loop.set_default_executor(self._pool)
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name="rtinfer-batcher")
            self._thread.start()
            # One queue feeding every instance, as rtinfer serve runs them: a sweep then
            # measures the configuration the server would use.
            self._batcher = Batcher(self.sessions, batching)
            self.concurrency = workers or max(16, 2 * batching.max_batch_size * instances)
        else:
            self.concurrency = workers or instances

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        if self._loop is None:
            session = self._free.get()
            try:
                session.run(feeds)
            finally:
                self._free.put(session)
            return
        valid = self.spec.validate(feeds) if self.spec else dict(feeds)
        future: Future[Any] = asyncio.run_coroutine_threadsafe(self._batcher.submit(valid),
                                                               self._loop)
        future.result()

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "instances": len(self.sessions),
               "engine": self.sessions[0].describe()}
        if self.batching is not None:
            b = self.batching
            out["batching"] = {"max_batch_size": b.max_batch_size,
                               "max_queue_delay_us": b.max_queue_delay_us,
                               "max_queue_size": b.max_queue_size}
        return out

    def close(self) -> None:
        if self._loop is not None:
            loop = self._loop
            asyncio.run_coroutine_threadsafe(self._batcher.stop(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5)
            loop.close()
            self._pool.shutdown()
        for s in self.sessions:
            s.close()


class _HTTPTarget(Target):
    """Shared plumbing: URL parsing, one keep-alive connection per worker thread."""

    def __init__(self, url: str, concurrency: int = 8, timeout_s: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"server URL must look like http://HOST:PORT/..., got '{url}'")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path.rstrip("/")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._conns: list[HTTPConnection] = []
        self._lock = threading.Lock()
        self.pid = _listening_pid(self.port)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, bytes, Any]:
        conn: HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = HTTPConnection(self.host, self.port,
                                                     timeout=self.timeout_s)
            with self._lock:
                self._conns.append(conn)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, ConnectionError) as exc:
            conn.close()
            self._local.conn = None
            raise TargetError(f"{method} {self.url}: {exc}; is the server running?") from exc
        return resp.status, data, resp.headers

    def _get_json(self, path: str) -> Any:
        status, data, _ = self._request("GET", path)
        if status != 200:
            raise TargetError(f"GET http://{self.host}:{self.port}{path} answered {status}: "
                              f"{data[:200]!r}; check the model name in the URL")
        return json.loads(data) if data else {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url, "server_pid": self.pid}

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


class KServeTarget(_HTTPTarget):
    """A server speaking the Open Inference Protocol (KServe v2) over HTTP.

    ``url`` is the model's address, ``http://HOST:PORT/v2/models/NAME[/versions/V]``. Tensors
    travel in the binary tensor extension when the server advertises ``binary_tensor_data``
    (``GET /v2``), else as JSON.
    """

    kind = "kserve-v2"

    def __init__(self, url: str, concurrency: int = 8, binary: bool | None = None) -> None:
        super().__init__(url, concurrency)
        if "/v2/models/" not in self.path:
            raise ValueError(f"a KServe v2 URL ends in /v2/models/NAME, got '{url}'")
        try:
            meta = self._get_json(self.path)
            server = self._get_json("/v2")
        except Exception:
            self.close()
            raise
        self.server = {"name": server.get("name"), "version": server.get("version")}
        self.binary = ("binary_tensor_data" in server.get("extensions", [])
                       if binary is None else binary)
        self.spec = ModelSpec(
            inputs=tuple(TensorSpec(t["name"], _np_dtype(t["datatype"]),
                                    tuple("batch" if i == 0 and d == -1 else
                                          (None if d == -1 else d)
                                          for i, d in enumerate(t["shape"])))
                         for t in meta.get("inputs", [])),
            outputs=tuple(TensorSpec(t["name"], _np_dtype(t["datatype"]), ())
                          for t in meta.get("outputs", [])))

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        inputs, blobs = [], []
        for name, value in feeds.items():
            datatype = TensorSpec(name, value.dtype.name, ()).kserve_datatype
            item: dict[str, Any] = {"name": name, "shape": list(value.shape),
                                    "datatype": datatype}
            if self.binary:
                blob = np.ascontiguousarray(value).tobytes()
                item["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                item["data"] = value.ravel().tolist()
            inputs.append(item)
        header = json.dumps({"inputs": inputs}).encode()
        headers = {"Content-Type": "application/json"}
        if self.binary:
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(len(header))}
        status, data, _ = self._request("POST", self.path + "/infer",
                                        header + b"".join(blobs), headers)
        if status != 200:
            raise TargetError(f"{self.url} answered {status}: {data[:300]!r}")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "protocol": "KServe v2 (Open Inference Protocol) HTTP",
                "encoding": "binary tensor extension" if self.binary else "JSON",
                "server": self.server}


class TFServingTarget(_HTTPTarget):
    """A server speaking TF Serving's REST API: ``POST /v1/models/NAME[/versions/V]:predict``
    with the columnar ``{"inputs": {name: tensor}}`` body; the answer holds ``"outputs"``."""

    kind = "tf-serving-rest"

    def __init__(self, url: str, concurrency: int = 8) -> None:
        super().__init__(url, concurrency)
        if "/v1/models/" not in self.path:
            raise ValueError(f"a TF Serving URL ends in /v1/models/NAME, got '{url}'")
        try:
            status = self._get_json(self.path)
        except Exception:
            self.close()
            raise
        states = [v.get("state") for v in status.get("model_version_status", [])]
        if "AVAILABLE" not in states:
            self.close()
            raise TargetError(f"{url} reports no AVAILABLE version (states: {states})")

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        body = json.dumps({"inputs": {k: v.tolist() for k, v in feeds.items()}}).encode()
        status, data, _ = self._request("POST", self.path + ":predict", body,
                                        {"Content-Type": "application/json"})
        if status != 200:
            raise TargetError(f"{self.url} answered {status}: {data[:300]!r}")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "protocol": "TF Serving REST (columnar inputs)"}


class GrpcTarget(Target):
    """A server speaking the Open Inference Protocol over gRPC (Triton's service), driven by
    ``tritonclient.grpc``: ``grpc://HOST:PORT/MODEL[/versions/V]``; tensors travel as raw
    buffers (``raw_input_contents``), as Triton's own clients send them."""

    kind = "kserve-v2-grpc"

    def __init__(self, url: str, concurrency: int = 8) -> None:
        from rtinfer._deps import require

        grpcclient = require("tritonclient.grpc", "Load over gRPC")
        parts = urllib.parse.urlsplit(url)
        path = parts.path.strip("/").split("/")
        if parts.scheme != "grpc" or not parts.hostname or not path[0] or len(path) not in (
                1, 3) or (len(path) == 3 and path[1] != "versions"):
            raise ValueError(f"a gRPC target looks like grpc://HOST:PORT/MODEL[/versions/V], "
                             f"got '{url}'")
        self.url, self.model = url, path[0]
        self.version = path[2] if len(path) == 3 else ""
        self.concurrency = concurrency
        self.port = parts.port or 8001
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(f"{parts.hostname}:{self.port}")
        try:
            meta = self._client.get_model_metadata(self.model, self.version, as_json=True)
            server = self._client.get_server_metadata(as_json=True)
        except Exception as exc:
            self._client.close()
            raise TargetError(f"{url}: {exc}; is the server running with --grpc-port, and the "
                              "model name right?") from exc
        self.server = {"name": server.get("name"), "version": server.get("version")}
        self.spec = ModelSpec(
            inputs=tuple(TensorSpec(t["name"], _np_dtype(t["datatype"]),
                                    tuple("batch" if i == 0 and int(d) == -1 else
                                          (None if int(d) == -1 else int(d))
                                          for i, d in enumerate(t.get("shape", []))))
                         for t in meta.get("inputs", [])),
            outputs=tuple(TensorSpec(t["name"], _np_dtype(t["datatype"]), ())
                          for t in meta.get("outputs", [])))
        self.pid = _listening_pid(self.port)

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        inputs = []
        for name, value in feeds.items():
            inp = self._grpc.InferInput(name, list(value.shape),
                                        TensorSpec(name, value.dtype.name, ()).kserve_datatype)
            inp.set_data_from_numpy(np.ascontiguousarray(value))
            inputs.append(inp)
        try:
            self._client.infer(self.model, inputs, model_version=self.version)
        except Exception as exc:  # InferenceServerException carries the status and message
            raise TargetError(f"{self.url}: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url, "server_pid": self.pid,
                "protocol": "KServe v2 (Open Inference Protocol) gRPC",
                "encoding": "raw_input_contents", "server": self.server}

    def close(self) -> None:
        self._client.close()


def open_target(target: str, *, engine: str | None = None, threads: int | None = None,
                instances: int = 1, batching: Any = None, concurrency: int | None = None,
                binary: bool | None = None) -> Target:
    """A URL opens a server target (``grpc://``: KServe v2 over gRPC; ``http://``: the
    protocol from the path, ``/v2/`` or ``/v1/``); anything else is a model opened in-process
    (ONNX file, artifact or repository model folder).
    ``binary`` picks the KServe v2 encoding (None: binary when the server advertises it)."""
    if target.startswith("grpc://"):
        return GrpcTarget(target, concurrency or 8)
    if target.startswith(("http://", "https://")):
        if "/v1/models/" in target:
            return TFServingTarget(target, concurrency or 8)
        return KServeTarget(target, concurrency or 8, binary=binary)
    return InProcessTarget(target, engine=engine, threads=threads, instances=instances,
                           batching=batching, workers=concurrency)


def wait_until_ready(base_url: str, timeout_s: float = 60.0,
                     alive: Callable[[], bool] | None = None,
                     path: str = "/v2/health/ready") -> None:
    """Poll ``GET {base_url}{path}`` until it answers 200 (never a fixed sleep); ``alive``
    (e.g. ``lambda: proc.poll() is None``) stops the wait when a server died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise TargetError(f"the server for {base_url} exited before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # answered, not ready yet: free its socket
            exc.close()
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise TargetError(f"{base_url} was not ready after {timeout_s:g} s")


def _np_dtype(datatype: str) -> str:
    names = {"BOOL": "bool", "FP16": "float16", "FP32": "float32", "FP64": "float64",
             "BYTES": "object"}
    return names.get(datatype, datatype.lower())


def _listening_pid(port: int) -> int | None:
    """The pid of the process listening on loopback ``port`` (None if not visible)."""
    import psutil

    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                return c.pid
    except (psutil.AccessDenied, OSError):
        return None
    return None
