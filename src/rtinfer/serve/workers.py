"""Several server processes on one port (``rtinfer serve REPO --workers N``).

    run_workers(functools.partial(build_app, settings), 4, host="0.0.0.0", port=8000)

The parent binds the socket once and starts N worker processes (uvicorn's supervisor, spawned,
not forked); each builds the app with ``factory(folder)``, which loads the repository itself
and passes ``folder`` to :func:`~rtinfer.serve.create_app` as ``workers_dir``. The parent
creates ``folder`` (a private temporary folder) before starting them and removes it on exit;
the workers share through it:

- metrics: ``folder/metrics`` is ``PROMETHEUS_MULTIPROC_DIR``, so a scrape answered by any
  worker reports the whole server (see :mod:`rtinfer.serve.metrics`);
- model control: ``POST /v2/repository/models/{m}/load|unload`` lands on one worker, which
  records it in ``folder/control.json`` and applies it; every worker applies the records it
  has not applied yet every 0.5 s (:class:`WorkerControl`). The answer therefore means
  "applied on this worker"; the others follow within 0.5 s (plus the load or drain itself).

SIGTERM (or SIGINT) to the parent closes its copy of the listening socket and sends SIGTERM to
every worker; each closes its copy (from then on new connections are refused), drains its
in-flight requests as a single server does, and the parent returns 0 once all have exited.
A worker that dies is replaced; one that fails to start stops the server (a broken
repository would fail the same way on every restart).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rtinfer.errors import RtinferError
from rtinfer.serve.metrics import MULTIPROC_ENV
from rtinfer.serve.repository import ModelRepository

__all__ = ["CONTROL_POLL_S", "ControlStore", "FileControlStore", "WorkerControl", "run_workers"]

_LOG = logging.getLogger("rtinfer.serve")

#: How often each worker applies the load/unload records the others made.
CONTROL_POLL_S = 0.5


def run_workers(factory: Callable[[Path], Any], workers: int, *, host: str, port: int,
                drain_s: float = 30.0) -> int:
    """Serve ``factory(folder)``'s ASGI app in ``workers`` processes accepting on one socket
    until SIGTERM/SIGINT; 0 then, or uvicorn's startup-failure code (3) when a worker failed
    to start. ``factory`` must pickle (a module-level function, or a partial of one)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from rtinfer.serve.http import UVICORN

    folder = Path(tempfile.mkdtemp(prefix="rtinfer-serve-"))
    (folder / "metrics").mkdir()
    saved = os.environ.get(MULTIPROC_ENV)
    # prometheus_client reads it when a worker first imports it; workers inherit it.
    os.environ[MULTIPROC_ENV] = str(folder / "metrics")
    try:
        # One socket bound here and shared by every worker, rather than one SO_REUSEPORT
        # socket per worker: a connection waits in the one accept queue until any worker is
        # free to take it, so a busy, still-loading or restarting worker never strands it
        # (with SO_REUSEPORT the kernel hashes it to one worker's queue, whose queued
        # connections are reset if that worker exits), and no other process can bind the
        # port beside us.
        config = uvicorn.Config(
            functools.partial(_start_worker, factory, folder), factory=True, host=host,
            port=port, workers=workers, **UVICORN,
            timeout_graceful_shutdown=int(drain_s) or None,
            # A worker loading a large model may hold the GIL for seconds; replacing it for a
            # slow health ping would restart it forever.
            timeout_worker_healthcheck=30)
        sock = config.bind_socket()  # exits with STARTUP_FAILURE when the port is taken
        class Supervisor(Multiprocess):
            def terminate_all(self) -> None:
                # Stop listening before the drain: once every worker has closed its copy of
                # the socket too (the first thing each does on SIGTERM), the kernel refuses
                # new connections instead of queueing them for workers that will never
                # accept them.
                for listening in self.sockets:
                    listening.close()
                super().terminate_all()

        try:
            supervisor = Supervisor(config, sockets=[sock])
            supervisor.run()
        finally:
            sock.close()
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        return STARTUP_FAILURE if failed else 0
    finally:
        if saved is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = saved
        shutil.rmtree(folder, ignore_errors=True)


def _start_worker(factory: Callable[[Path], Any], folder: Path) -> Any:
    """In a worker: the app, or exit with STARTUP_FAILURE (uvicorn then stops the server
    instead of restarting a worker that would fail again)."""
    from uvicorn.config import STARTUP_FAILURE

    try:
        return factory(folder)
    except Exception as exc:
        _LOG.error("worker %d failed to start: %s", os.getpid(), exc)
        sys.exit(STARTUP_FAILURE)


class FileControlStore:
    """The records of one server's workers in ``folder/control.json`` (one host).

    Each write takes an exclusive lock, writes a temporary file and renames it, so readers
    never see half a file.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "control.json"
        self.lock = folder / "control.lock"

    async def record(self, section: str, name: str, action: str | None
                     ) -> tuple[int, str | None]:
        """Write the next record of ``name`` into ``section``; returns its number (and no
        epoch: the file outlives its workers)."""
        import fcntl  # POSIX only: imported here so that the module imports anywhere

        with open(self.lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held for a read and a rename: microseconds
            state = next_state(self._read(), section, name, action)
            staging = self.path.with_name(f".control.{os.getpid()}.tmp")
            staging.write_text(json.dumps(state))
            staging.replace(self.path)
        return int(state["seq"]), None

    async def read(self) -> dict[str, Any]:
        return self._read()

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return empty_state()


def empty_state() -> dict[str, Any]:
    return {"seq": 0, "models": {}}


def next_state(state: dict[str, Any], section: str, name: str, action: str | None
               ) -> dict[str, Any]:
    """``state`` with the next record of ``name`` in ``section`` (a number alone for a guard
    reset, ``{"seq", "action"}`` for a load or unload)."""
    seq = state["seq"] + 1
    entry: Any = seq if action is None else {"seq": seq, "action": action}
    return {**state, "seq": seq, section: {**state.get(section, {}), name: entry}}


class ControlStore(Protocol):
    """Where the processes (or Ray replicas) of one server share their model-control records:
    :class:`FileControlStore` on one host, a Ray actor on a cluster
    (:mod:`rtinfer.scale.ray_serve`)."""

    async def record(self, section: str, name: str, action: str | None
                     ) -> tuple[int, str | None]:
        """The record's number, and the store's epoch (None for a store that cannot restart
        empty)."""

    async def read(self) -> dict[str, Any]: ...


class WorkerControl:
    """Explicit load/unload shared by the workers (or replicas) of one server.

    The store holds the latest action per model, numbered in one sequence: ``{"seq": 7,
    "models": {"cnn": {"seq": 7, "action": "unload"}}}``. The worker that answers records its
    action first, then applies it; every worker applies each model's record once its number
    is newer than the last it applied. Recording before applying keeps the workers in step
    when two of them get actions for one model at once: the later record wins everywhere. A
    guard's reset (the switch back after a rollback) is recorded beside them, under
    ``"resets"``, so that it reaches every worker and never replaces a load/unload.
    """

    def __init__(self, store: ControlStore, repository: ModelRepository) -> None:
        self.store = store
        self.repository = repository
        self.applied: dict[str, int] = {}  # model -> the last record applied here
        self.resets: dict[str, int] = {}   # model -> the last guard reset applied here
        self.epoch: str | None = None      # the store's, when it has one (a Ray actor)

    async def load_model(self, name: str) -> None:
        await self._act(name, "load")

    async def unload_model(self, name: str) -> None:
        await self._act(name, "unload")

    async def reset_guard(self, name: str) -> int:
        """Record a reset of ``name``'s guards for every worker, then reset them here (this
        worker may have none left to reset: its version may still be loading)."""
        self.repository.require(name, "unload")  # a model this server knows
        config = self.repository.configs().get(name)
        if config is None or config.guard is None:
            return await self.repository.reset_guard(name)  # no guard configured: that 404
        self.resets[name] = self._numbered(*await self.store.record("resets", name, None))
        return await self.repository.reset_guard(name) if self.repository.guards(name) else 0

    async def sync(self) -> None:
        """Apply the other workers' records this worker has not applied yet."""
        state = await self.store.read()
        self._follow(state.get("epoch"))
        for name, seq in state.get("resets", {}).items():
            if seq > self.resets.get(name, 0):
                self.resets[name] = seq
                if self.repository.guards(name):
                    await self.repository.reset_guard(name)
        for name, record in state["models"].items():
            if record["seq"] <= self.applied.get(name, 0):
                continue
            self.applied[name] = record["seq"]
            try:
                await self._apply(name, record["action"])
            except RtinferError as exc:  # the worker that answered reported it already
                _LOG.warning("%s of model %s (asked of another worker): %s", record["action"],
                             name, exc)

    async def _act(self, name: str, action: str) -> None:
        self.repository.require(name, action)  # an unknown model is nobody else's business
        self.applied[name] = self._numbered(*await self.store.record("models", name, action))
        await self._apply(name, action)

    def _follow(self, epoch: str | None) -> None:
        """A store that started afresh (a restarted Ray actor) numbers from 1 again: forget
        the numbers applied under the old epoch."""
        if epoch != self.epoch:
            if self.epoch is not None:
                self.applied.clear()
                self.resets.clear()
            self.epoch = epoch

    def _numbered(self, seq: int, epoch: str | None) -> int:
        self._follow(epoch)
        return seq

    async def _apply(self, name: str, action: str) -> None:
        if action == "load":
            await self.repository.load_model(name)
        else:
            await self.repository.unload_model(name)
