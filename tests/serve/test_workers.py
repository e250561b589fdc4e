"""``rtinfer serve --workers N``: several processes on one port that act as one server (answers,
metrics, model control), the threads they share, and failures that stop it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from conftest_helpers import (
    KEY,
    assert_all_exited,
    call,
    children_of,
    serve_process,
    wait_ready,
)
from prometheus_client.parser import text_string_to_metric_families

import rtinfer
from rtinfer.hardware import usable_cores
from rtinfer.models import ImportedModel
from rtinfer.serve import ModelConfig, load_repository
from rtinfer.serve.inthread import free_port
from rtinfer.serve.workers import FileControlStore, WorkerControl

X = np.random.default_rng(5).standard_normal((50, 1, 3, 32, 32)).astype(np.float32)
AUTH = {"X-API-Key": KEY}


def _send(conn: HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    conn.request(method, path, None if body is None else json.dumps(body).encode(),
                 {"Content-Type": "application/json", **AUTH})
    response = conn.getresponse()
    return response.status, response.read()


def _infer(conn: HTTPConnection, x: np.ndarray) -> np.ndarray:
    status, body = _send(conn, "POST", "/v2/models/cnn/infer", {"inputs": [
        {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})
    assert status == 200, body[:200]
    out = json.loads(body)["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def _connections_to_each(port: int, workers: list[psutil.Process], timeout_s: float = 60
                         ) -> dict[int, HTTPConnection]:
    """A keep-alive connection accepted by each worker: new connections are opened until every
    worker has taken one (which worker accepts a connection is the kernel's choice)."""
    found: dict[int, HTTPConnection] = {}
    spare: list[HTTPConnection] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < len(workers):
        assert time.monotonic() < deadline, f"only workers {sorted(found)} took connections"
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        assert _send(conn, "GET", "/v2/health/live")[0] == 200  # answered: accepted
        client = conn.sock.getsockname()  # the server side's remote address
        owner = next(c.pid for c in psutil.net_connections("tcp") if c.raddr == client
                     and c.laddr.port == port)
        assert owner in {w.pid for w in workers}
        if owner in found:
            spare.append(conn)
        else:
            found[owner] = conn
    for conn in spare:
        conn.close()
    return found


def _success_total(text: bytes) -> float:
    return sum(s.value for family in text_string_to_metric_families(text.decode())
               for s in family.samples if s.name == "rtinfer_request_success_total"
               and s.labels["model"] == "cnn")


def _until(condition: Any, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_workers_answer_count_and_load_unload_as_one_server(
        cnn: ImportedModel, tmp_path: Path) -> None:
    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    with rtinfer.load(cnn, threads=1) as session:
        want = [session.run({"image": x})["logits"] for x in X]
    port = free_port()
    url = f"127.0.0.1:{port}"
    with serve_process(str(tmp_path / "repo"), "--port", str(port), "--workers", "2",
                       "--threads", "1", "--api-key", KEY) as proc:
        wait_ready(url, proc)  # health needs no key, in every worker as in one process
        children = children_of(proc)
        workers = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        conns = _connections_to_each(port, workers)
        a, b = (conns[w.pid] for w in workers)

        # 50 requests in turn over four keep-alive connections: one on each worker, two on
        # whichever worker accepts them
        loaded = [a, b, *(HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(2))]
        for i, x in enumerate(X):
            np.testing.assert_allclose(_infer(loaded[i % 4], x), want[i], atol=1e-5)
        for conn in loaded[2:]:
            conn.close()
        # the scrape counts both workers' successes, whichever worker answers it
        for conn in (a, b):
            status, text = _send(conn, "GET", "/metrics")
            assert status == 200 and _success_total(text) == len(X)
        for _ in range(4):  # fresh connections: any worker
            assert _success_total(call(url, "/metrics", headers=AUTH)[1]) == len(X)
        assert call(url, "/metrics")[0] == 401

        # unload on worker a: a at once, b within its poll; then every fresh connection
        assert _send(a, "POST", "/v2/repository/models/cnn/unload", {})[0] == 200
        assert _send(a, "GET", "/v2/models/cnn/ready")[0] == 404
        _until(lambda: _send(b, "GET", "/v2/models/cnn/ready")[0] == 404,
               "the other worker did not unload")
        assert [call(url, "/v2/models/cnn/ready", headers=AUTH)[0] for _ in range(8)] == [404] * 8
        # load on worker b: the same the other way round, and both serve again
        assert _send(b, "POST", "/v2/repository/models/cnn/load", {})[0] == 200
        assert _send(b, "GET", "/v2/models/cnn/ready")[0] == 200
        _until(lambda: _send(a, "GET", "/v2/models/cnn/ready")[0] == 200,
               "the other worker did not load")
        assert [call(url, "/v2/models/cnn/ready", headers=AUTH)[0] for _ in range(8)] == [200] * 8
        for conn in (a, b):
            np.testing.assert_allclose(_infer(conn, X[0]), want[0], atol=1e-5)
            conn.close()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert b"with 2 worker processes" in proc.stderr.read()  # type: ignore[union-attr]
    assert_all_exited(children)


def test_worker_control_applies_what_another_worker_did(cnn: ImportedModel,
                                                        tmp_path: Path) -> None:
    """Two workers' repositories in one process, sharing one control folder."""
    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    one, two = (WorkerControl(FileControlStore(tmp_path),
                              load_repository(tmp_path / "repo", threads=1))
                for _ in range(2))

    async def scenario() -> None:
        await one.unload_model("cnn")
        assert not one.repository.served and two.repository.served
        await two.sync()
        assert not two.repository.served and "cnn" in two.repository.unloaded
        await one.sync()  # nothing new for the one that did it
        await two.load_model("cnn")
        await one.unload_model("cnn")  # a later action wins everywhere
        await two.sync()
        await one.sync()
        assert not one.repository.served and not two.repository.served
        with pytest.raises(LookupError, match="unknown model 'nope'"):
            await one.unload_model("nope")
        await one.repository.close()
        await two.repository.close()

    asyncio.run(scenario())
    assert json.loads((tmp_path / "control.json").read_text()) == {
        "seq": 3, "models": {"cnn": {"seq": 3, "action": "unload"}}}  # no record for 'nope'


def test_default_threads_share_the_cores_among_workers() -> None:
    cores = usable_cores()
    for instances, workers in ((1, 2), (2, 2), (1, 4)):
        threads = ModelConfig(name="m", instances=instances, workers=workers).thread_budget
        assert threads * instances * workers <= max(cores, instances * workers)
        assert threads >= 1
    assert ModelConfig(name="m", instances=1, workers=2).oversubscription() is None
    explicit = ModelConfig(name="m", threads=cores, instances=1, workers=2)
    assert explicit.thread_budget == cores  # honoured as given, with a warning
    assert f"{cores} thread(s) x 1 instance(s) x 2 worker(s) = {2 * cores} threads on " \
           f"{cores} usable core(s)" in (explicit.oversubscription() or "")


def _triton_folder(repo: Path) -> None:
    """A model folder whose config the parent reads (it loads nothing itself)."""
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m" instance_group [{ count: 2 }]')


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    tmp.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "rtinfer.cli", "serve", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp)})


def test_oversubscribed_threads_warn_and_a_taken_port_stops_the_server(tmp_path: Path) -> None:
    _triton_folder(tmp_path / "repo")
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = _cli(str(tmp_path / "repo"), "--port", str(port), "--workers", "2",
                    "--threads", str(usable_cores()), tmp=tmp_path / "tmp")
    assert done.returncode == 3, done.stderr  # uvicorn's startup failure
    assert f"x 2 instance(s) x 2 worker(s) = {4 * usable_cores()} threads" in done.stderr
    assert "address already in use" in done.stderr.lower()
    assert not list((tmp_path / "tmp").glob("rtinfer-*"))


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()  # no models: every worker fails to load it
    done = _cli(str(tmp_path / "repo"), "--port", str(free_port()), "--workers", "2",
                tmp=tmp_path / "tmp")
    assert done.returncode == 3, done.stderr  # stopped, not restarted forever
    assert "holds no models" in done.stderr and "a worker failed to start" in done.stderr
    assert not list((tmp_path / "tmp").glob("rtinfer-*"))


def test_worker_control_follows_a_store_that_restarted_empty(cnn: ImportedModel,
                                                             tmp_path: Path) -> None:
    """A Ray actor holding the records can restart empty (numbered from 1 again, a new
    epoch): the workers forget the numbers they applied, so a new record still reaches them."""
    import uuid

    from rtinfer.serve.workers import empty_state, next_state

    class Store:  # the shared actor's behaviour, in memory
        def __init__(self) -> None:
            self.restart()

        def restart(self) -> None:
            self.state = {**empty_state(), "epoch": uuid.uuid4().hex}

        async def record(self, section: str, name: str, action: str | None
                         ) -> tuple[int, str | None]:
            self.state = next_state(self.state, section, name, action)
            return self.state["seq"], self.state["epoch"]

        async def read(self) -> dict[str, Any]:
            return self.state

    rtinfer.save_artifact(cnn, tmp_path / "repo", "cnn")
    store = Store()
    one, two = (WorkerControl(store, load_repository(tmp_path / "repo", threads=1))
                for _ in range(2))

    async def scenario() -> None:
        await one.sync()
        await two.sync()
        await one.unload_model("cnn")   # record 1
        await two.sync()
        assert not two.repository.served
        await one.load_model("cnn")     # record 2
        await two.sync()
        assert two.repository.served
        store.restart()
        await one.unload_model("cnn")   # record 1 again, under the new epoch
        await two.sync()
        assert not two.repository.served and not one.repository.served
        await one.repository.close()
        await two.repository.close()

    asyncio.run(scenario())
