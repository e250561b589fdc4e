"""``rtinfer serve`` as a process: SIGTERM drains in-flight requests before it exits, with one
process or several workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_helpers import assert_all_exited, call, children_of, serve_process, wait_ready

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.serve.inthread import free_port


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests(cnn: ImportedModel, tmp_path: Path,
                                           workers: int) -> None:
    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    (tmp_path / "tmp").mkdir()  # the server's temporary folders go here (TMPDIR)
    port = free_port()
    # The oldest request waits 1.5 s for company, so one is surely in flight at SIGTERM.
    url = f"127.0.0.1:{port}"
    with serve_process(str(tmp_path / "repo"), "--port", str(port), "--threads", "1",
                       "--max-batch-size", "8", "--max-queue-delay-us", "1500000",
                       "--drain-s", "20", "--workers", str(workers),
                       env={**os.environ, "TMPDIR": str(tmp_path / "tmp")}) as proc:
        wait_ready(url, proc)
        children = children_of(proc)
        x = np.zeros((1, 3, 32, 32), np.float32)
        body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 32,
                                       32], "data": x.ravel().tolist()}]}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v2/models/cnn/infer HTTP/1.1\r\nHost: x\r\nConnection: close"
                         b"\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            # With workers the scrape sums every worker's pending count (each refreshed at
            # least every 0.5 s), whichever worker holds the request.
            deadline = time.monotonic() + 30
            while b"rtinfer_pending_requests{model=\"cnn\",version=\"1\"} 1.0" not in call(
                    url, "/metrics")[1]:
                assert time.monotonic() < deadline, "the request never showed as pending"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            # While the request drains, the port stops taking new connections.
            deadline = time.monotonic() + 10
            while not _refused(port):
                assert time.monotonic() < deadline, "new connections still accepted in drain"
                time.sleep(0.05)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["outputs"][0]["shape"] == [1, 10]
        # A drained stop is a success, with one process as with workers (an orchestrator
        # reads any other status as a crash).
        assert proc.wait(timeout=30) == 0
    assert_all_exited(children)
    assert not list((tmp_path / "tmp").glob("rtinfer-*"))  # the workers' folder is removed


def _refused(port: int) -> bool:
    """True when a new connection to the port is refused (nothing listens any more)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:  # reset or timed out: not accepted either
        return True
