"""``rtinfer serve`` as a process: SIGTERM drains in-flight requests before it exits."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest_helpers import call

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve.inthread import free_port


@contextmanager
def _serve(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``rtinfer serve ARGS`` as a child process, killed on the way out if still running."""
    with subprocess.Popen([sys.executable, "-m", "rtinfer.cli", "serve", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(cnn: ImportedModel, tmp_path: Path) -> None:
    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    port = free_port()
    # The oldest request waits 1.5 s for company, so one is surely in flight at SIGTERM.
    url = f"127.0.0.1:{port}"
    with _serve(str(tmp_path / "repo"), "--port", str(port), "--threads", "1",
                "--max-batch-size", "8", "--max-queue-delay-us", "1500000",
                "--drain-s", "20") as proc:
        deadline = time.monotonic() + 120
        while call(url, "/v2/health/ready")[0] != 200:  # OSError-free: call returns errors
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        x = np.zeros((1, 3, 32, 32), np.float32)
        body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 32,
                                       32], "data": x.ravel().tolist()}]}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v2/models/cnn/infer HTTP/1.1\r\nHost: x\r\nConnection: close"
                         b"\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            while b"rtinfer_pending_requests{model=\"cnn\",version=\"1\"} 1.0" not in call(
                    url, "/metrics")[1]:
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["outputs"][0]["shape"] == [1, 10]
        # uvicorn re-raises the signal once it has shut down, as a process killed by it would
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
