"""Serve fixtures: an ASGI app on a free loopback port in a thread, polled until ready."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rtinfer.errors import TargetError
from rtinfer.serve.inthread import serve_in_thread

KEY = "test-key"  # the API key of the shared server fixture

# A config.pbtxt as Triton users write them (comments, lists, repeated and nested fields).
TRITON_CONFIG = """
name: "m"   # a comment
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]
version_policy: { specific: { versions: [1, 3] } }
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 3 }
}
"""


@contextmanager
def running(app: Any, probe: str = "/v2/health/ready") -> Iterator[str]:
    """Yield ``host:port`` of ``app`` served on 127.0.0.1 once ``probe`` answers 200
    (``/v2/health/live`` for a server that is meant not to be ready), stopped on exit."""
    with serve_in_thread(app, probe, timeout_s=30) as base:
        yield base.removeprefix("http://")


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None
                  ) -> Iterator[subprocess.Popen[bytes]]:
    """``rtinfer serve ARGS`` as a child process in its own process group, which is killed
    on the way out (the server's worker processes with it) if anything is left running."""
    with subprocess.Popen([sys.executable, "-m", "rtinfer.cli", "serve", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True, env=env) as proc:
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):  # nothing left: nothing to kill
                os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Poll ``url``'s readiness until 200; fail with the server's stderr if it never is."""
    from rtinfer.bench.targets import wait_until_ready

    try:
        wait_until_ready(f"http://{url}", timeout_s, alive=lambda: proc.poll() is None)
    except TargetError as exc:
        with contextlib.suppress(ProcessLookupError):  # stop it, so that stderr ends
            os.killpg(proc.pid, signal.SIGKILL)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"{exc}:\n{stderr}") from None


def children_of(proc: subprocess.Popen[bytes]) -> list[Any]:
    """The processes ``proc`` started (psutil), to check later that none outlived it."""
    import psutil

    return psutil.Process(proc.pid).children(recursive=True)


def assert_all_exited(processes: list[Any], timeout_s: float = 30) -> None:
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    assert not alive, f"still running: {[p.cmdline() for p in alive]}"


def call(url: str, path: str, body: Any = None, method: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """``(status, parsed JSON or raw bytes)`` of one plain-HTTP request; errors are returned."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
        else body
    req = urllib.request.Request(f"http://{url}{path}", data=data, headers=headers or {},
                                 method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:  # not listening (yet): the caller polls
        return 0, b""
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def infer_concurrently(url: str, model: str, name: str, xs: list[Any], output: str) -> list[Any]:
    """Send every array of ``xs`` as input ``name`` at once (tritonclient's gevent
    concurrency, binary tensors); each request's ``output``, in order."""
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    client = httpclient.InferenceServerClient(url, concurrency=len(xs))
    pending = []
    for x in xs:
        inp = httpclient.InferInput(name, list(x.shape), np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x, binary_data=True)
        pending.append(client.async_infer(model, [inp]))
    return [p.get_result().as_numpy(output) for p in pending]
