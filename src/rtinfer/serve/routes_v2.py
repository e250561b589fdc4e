"""The Open Inference Protocol (KServe v2) routes, with Triton's statistics and repository
extensions.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]``,
``…/ready``, ``POST …/infer``, ``GET /v2/models/{m}/stats``, ``POST /v2/repository/index``,
``POST /v2/repository/models/{m}/load`` and ``…/unload`` (and rtinfer's ``…/guard/reset``: the
switch back after a guard's rollback). With several worker processes a
load/unload answer means "done on the worker that answered"; the others follow within 0.5 s
(:class:`~rtinfer.serve.workers.WorkerControl`).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rtinfer import __version__
from rtinfer.errors import ModelNotFoundError, ModelUnavailableError, RtinferError
from rtinfer.serve.handler import classify, refused, run, timeout_param
from rtinfer.serve.http import BodyResponse, error_response, read_body
from rtinfer.serve.protocol import (
    DECODE_INLINE_BYTES,
    EXTENSIONS,
    decode_infer_request,
    encode_infer_response,
    header_length,
)
from rtinfer.serve.repository import ModelRepository

__all__ = ["routes"]

_HEADER_LENGTH = "inference-header-content-length"


def routes(ctx: dict[str, Any]) -> list[Route]:
    repo: ModelRepository = ctx["repo"]
    control = ctx["control"]  # load/unload: the repository, or what shares them with workers
    metrics = ctx["metrics"]
    limit: int = ctx["limit"]

    def found(request: Request) -> Any:
        return repo.resolve(request.path_params["model"], request.path_params.get("version"))

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "rtinfer", "version": __version__,
                             "extensions": EXTENSIONS})

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def ready(request: Request) -> Response:
        return Response(status_code=200 if repo.ready() else 503)

    async def model_ready(request: Request) -> Response:
        try:
            found(request)
        except ModelNotFoundError as exc:
            return error_response(classify(exc))
        return Response(status_code=200)

    async def model_metadata(request: Request) -> Response:
        try:
            served = found(request)
        except ModelNotFoundError as exc:
            return error_response(classify(exc))
        versions = [str(v) for v in sorted(repo.served.get(served.name, {}))]
        return JSONResponse(served.metadata(versions))

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["model"]
        served = None
        try:
            body = await read_body(request, limit)
            served = found(request)  # after the body: a reload meanwhile routes to the new one
            served.batcher.admit()  # a full queue refuses before paying for the decode
            args = (body, header_length(request.headers.get(_HEADER_LENGTH)),
                    served.session.spec, served.raw)
            if len(body) > DECODE_INLINE_BYTES:
                parsed, feeds, binary = await run_in_threadpool(decode_infer_request, *args)
            else:
                parsed, feeds, binary = decode_infer_request(*args)
        except Exception as exc:
            return error_response(refused(exc, name, served, metrics))
        try:
            outputs = await run(served, feeds, timeout_param(parsed.get("parameters")), metrics,
                                started)
            payload, json_len = encode_infer_response(served.name, served.version, parsed,
                                                      outputs, binary)
        except Exception as exc:
            return error_response(classify(exc, name))
        if json_len is None:
            return BodyResponse(payload)
        return BodyResponse(payload, b"application/octet-stream",
                            ((_HEADER_LENGTH.encode(), b"%d" % json_len),))

    async def model_stats(request: Request) -> Response:
        try:
            served = found(request)
        except ModelNotFoundError as exc:
            return error_response(classify(exc))
        stats = served.batcher.stats
        return JSONResponse({"model_stats": [{
            "name": served.name, "version": served.version,
            "inference_count": stats.rows, "execution_count": stats.batches,
            "batch_sizes": {str(k): v for k, v in sorted(stats.batch_sizes.items())},
            "rejected": stats.rejected, "timed_out": stats.timed_out,
        }]})

    async def repository_index(request: Request) -> Response:
        return JSONResponse(repo.index())

    async def load_model(request: Request) -> Response:
        try:
            await control.load_model(request.path_params["model"])
        except (ModelNotFoundError, ModelUnavailableError) as exc:
            return error_response(classify(exc))
        except RtinferError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({})

    async def unload_model(request: Request) -> Response:
        try:
            await control.unload_model(request.path_params["model"])
        except (ModelNotFoundError, ModelUnavailableError) as exc:
            return error_response(classify(exc))
        except RtinferError as exc:  # not a plain model name
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({})

    async def reset_guard(request: Request) -> Response:
        """The explicit switch back after a rollback (rtinfer's own; Triton has no guard)."""
        try:
            count = await control.reset_guard(request.path_params["model"])
        except (ModelNotFoundError, ModelUnavailableError) as exc:
            return error_response(classify(exc))
        except RtinferError as exc:  # not a plain model name
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"reset": count})

    model = "/v2/models/{model}"
    version = "/v2/models/{model}/versions/{version}"
    return [  # inference first: routes are matched in order
        Route(model + "/infer", infer, methods=["POST"]),
        Route(version + "/infer", infer, methods=["POST"]),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route(model, model_metadata),
        Route(version, model_metadata),
        Route(model + "/ready", model_ready),
        Route(version + "/ready", model_ready),
        Route(model + "/stats", model_stats),
        Route("/v2/repository/index", repository_index, methods=["POST", "GET"]),
        Route("/v2/repository/models/{model}/load", load_model, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", unload_model, methods=["POST"]),
        Route("/v2/repository/models/{model}/guard/reset", reset_guard, methods=["POST"]),
    ]
