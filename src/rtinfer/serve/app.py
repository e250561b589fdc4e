"""``rtinfer serve``'s ASGI app: the Open Inference Protocol (KServe v2) and TF Serving's REST
API over one model repository, with Prometheus metrics, an API key and a body limit.

    app = create_app("repo", api_key="s3cret", poll_interval_s=2)   # an ASGI app (Starlette)
    rtinfer serve repo --port 8000                                 # the same behind uvicorn

Routes: v2 health, server and model metadata, readiness, ``infer``, ``stats`` and the
repository extension (:mod:`rtinfer.serve.routes_v2`); TF Serving's ``:predict``, status and
metadata (:mod:`rtinfer.serve.routes_tfs`); ``GET /metrics``. Errors are ``{"error": "..."}``:
400 bad request, 401 missing/wrong key (every route but health needs the key when one is set),
404 unknown model or version, 413 body over the limit, 503 with ``Retry-After`` when a queue is
full (TF Serving: 429), 500 engine failure. Request payloads are never logged.

With ``poll_interval_s`` the repository is polled for new, changed and removed versions (see
:mod:`rtinfer.serve.repository`); on shutdown (SIGTERM under uvicorn) every model drains its
queue before the process exits. With ``workers_dir`` the app is one worker process of several
(:mod:`rtinfer.serve.workers`): metrics and explicit load/unload go through that folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rtinfer.errors import ModelUnavailableError
from rtinfer.serve.http import error_response, read_body
from rtinfer.serve.metrics import ServerMetrics
from rtinfer.serve.openapi import openapi
from rtinfer.serve.repository import ModelRepository, load_repository
from rtinfer.serve.workers import CONTROL_POLL_S, ControlStore, FileControlStore, WorkerControl

__all__ = ["build_server", "check_api_key", "create_app", "error_response", "presented_key",
           "read_body"]

_LOG = logging.getLogger("rtinfer.serve")
# Health answers without the key (probes carry none); exact paths, never a prefix.
_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def check_api_key(key: str) -> str:
    """``key`` stripped; an empty or whitespace key is refused (it would match an empty
    header, which is no authentication at all)."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError("the API key is empty; give a non-empty key (or none, to serve "
                         "without authentication on a trusted network)")
    if not key.strip().isprintable() or any(c.isspace() for c in key.strip()):
        raise ValueError("the API key holds spaces or control characters; use a single "
                         "printable token (e.g. from `openssl rand -hex 32`)")
    return key.strip()


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request presents: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``
    (the scheme is case-insensitive, RFC 7235); None when neither is there in that form."""
    found = dict(headers)
    if b"x-api-key" in found:
        return found[b"x-api-key"].strip()
    scheme, _, token = found.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


class _ApiKey:
    """Pure ASGI middleware: 401 unless the key is sent (``Authorization: Bearer`` or
    ``X-API-Key``), compared in constant time; the two health routes are open."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()  # checked by create_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            given = presented_key(scope["headers"])
            if given is None or not hmac.compare_digest(given, self.key):
                response = JSONResponse(
                    {"error": "missing or wrong API key: send it as 'Authorization: Bearer "
                              "<key>' or 'X-API-Key: <key>'"}, status_code=401,
                    headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(models: ModelRepository | str | Path, *, api_key: str | None = None,
               max_body_bytes: int = 64 << 20, poll_interval_s: float = 0.0,
               workers_dir: str | Path | None = None, grpc_port: int | None = None,
               grpc_host: str = "127.0.0.1", drain_s: float = 30.0,
               control_store: ControlStore | None = None, metrics_hub: Any = None
               ) -> Starlette:
    """The ASGI app over a loaded :class:`ModelRepository` (or a repository path to load).

    ``workers_dir``: the folder the worker processes of one server share (given by
    :func:`~rtinfer.serve.workers.run_workers`); None for a server of one process.
    ``control_store``: where the replicas of one server on Ray share load/unload (see
    :mod:`rtinfer.scale.ray_serve`); ``metrics_hub``: where they merge their metrics.
    ``grpc_port``: also serve KServe v2 over gRPC there (0: any free port, read back from
    ``app.state.grpc_port`` once the app has started; None: no gRPC), on the same batchers,
    started and stopped (``drain_s`` for running calls) with the app's lifespan.
    """
    from rtinfer.serve import routes_tfs, routes_v2

    if api_key is not None:
        api_key = check_api_key(api_key)  # before anything loads: an empty key is an error
    repo = models if isinstance(models, ModelRepository) else load_repository(models)
    shared = Path(workers_dir) if workers_dir is not None else None
    metrics = ServerMetrics(repo, shared / "metrics" if shared else None, hub=metrics_hub)
    if shared is not None:
        control_store = FileControlStore(shared)
    control = WorkerControl(control_store, repo) if control_store is not None else None
    repo.observer_factory = metrics.observer
    repo.guard_observer_factory = metrics.guard
    for served in repo.models():  # loaded before the app existed: attach their observers
        served.batcher.observer = metrics.observer(served.name, served.version)
        if served.guard is not None:
            served.guard.observer = metrics.guard(served.name, served.version)
    context: dict[str, Any] = {"repo": repo, "metrics": metrics, "limit": max_body_bytes,
                               "control": control or repo}

    async def prometheus(request: Request) -> Response:
        try:
            body, content_type = await metrics.exposition_async()
        except ModelUnavailableError as exc:  # the other replicas' figures are out of reach
            return JSONResponse({"error": str(exc)}, status_code=503,
                                headers={"Retry-After": "1"})
        return Response(body, media_type=content_type.split(";")[0],
                        headers={"Content-Type": content_type})

    async def openapi_document(request: Request) -> Response:
        return JSONResponse(openapi())

    async def follow_others() -> None:
        assert control is not None
        await control.sync()
        await metrics.share()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks = []
        if poll_interval_s > 0 and repo.path is not None:
            tasks.append(loop.create_task(_every(poll_interval_s, repo.poll, "repository poll")))
        if control is not None:
            await follow_others()  # a replaced worker catches up before it serves
            tasks.append(loop.create_task(_every(CONTROL_POLL_S, follow_others,
                                                 "applying other workers' load/unload")))
        grpc = None
        if grpc_port is not None:
            from rtinfer.serve.grpc_server import GrpcServer

            grpc = GrpcServer(repo, metrics, context["control"], host=grpc_host, port=grpc_port,
                              api_key=api_key, max_message_bytes=max_body_bytes,
                              reuse_port=control is not None)
            app.state.grpc_port = await grpc.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if grpc is not None:  # running calls finish; new ones are refused
                await grpc.stop(drain_s)
            await repo.close()  # drain: queued and running requests finish first
            metrics.close()

    routes = [*routes_v2.routes(context), *routes_tfs.routes(context),
              Route("/metrics", prometheus), Route("/openapi.json", openapi_document)]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _server_fault})
    if api_key is not None:
        app.add_middleware(_ApiKey, key=api_key)
    app.state.repository = repo
    app.state.metrics = metrics
    return app


def build_server(settings: Mapping[str, Any], *, workers_dir: Path | None = None,
                 control_store: ControlStore | None = None, metrics_hub: Any = None
                 ) -> Starlette:
    """The app ``rtinfer serve`` runs, from its settings (``repo``, ``overrides``,
    ``drain_timeout_s``, ``workers``, ``cores``, ``api_key``, ``max_body_bytes``,
    ``poll_interval_s``, ``grpc_port``, ``host``): the repository loaded, then the app over it.
    One worker process of several passes ``workers_dir``; a Ray replica its shared store and
    metrics hub."""
    repository = load_repository(settings["repo"], overrides=settings["overrides"],
                                 drain_timeout_s=settings["drain_timeout_s"],
                                 workers=settings.get("workers", 1),
                                 cores=settings.get("cores"))
    return create_app(repository, api_key=settings["api_key"],
                      max_body_bytes=settings["max_body_bytes"],
                      poll_interval_s=settings["poll_interval_s"], workers_dir=workers_dir,
                      grpc_port=settings.get("grpc_port"),
                      grpc_host=settings.get("host", "127.0.0.1"),
                      drain_s=settings["drain_timeout_s"], control_store=control_store,
                      metrics_hub=metrics_hub)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), as JSON errors."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path[:200]}"},
                        status_code=exc.status_code, headers=exc.headers)


async def _server_fault(request: Request, exc: Exception) -> Response:
    """A fault no route caught: 500 as JSON (uvicorn logs the traceback, not the body)."""
    return JSONResponse({"error": f"internal server error ({type(exc).__name__}); the server "
                                  "log has it"}, status_code=500)


async def _every(interval_s: float, step: Callable[[], Awaitable[None]], what: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except Exception as exc:  # a failed step must not stop the loop; logged and retried
            _LOG.warning("%s failed: %s", what, exc)
