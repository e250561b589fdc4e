"""A first slice of ``rtinfer serve``: the Open Inference Protocol over HTTP (JSON and binary
tensors), for every model of a repository, with an optional API key and a request size limit.

    app = create_app("repo", api_key="s3cret")        # an ASGI app (Starlette)
    rtinfer serve repo --port 8000                     # the same behind uvicorn, on 127.0.0.1

Routes: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}[/versions/{v}]``,
``/v2/models/{m}[/versions/{v}]/ready``, ``POST /v2/models/{m}[/versions/{v}]/infer``.
``GET /v2/models/{m}/stats`` reports the batcher's counts. Errors are ``{"error": "..."}``:
400 bad request, 401 missing/wrong key, 404 unknown model or version, 413 body over the limit,
503 (with ``Retry-After``) queue full or timed out, 500 engine failure. Models load and warm up
before the app answers ready. Request payloads are never logged. Not yet here (tracked in the
serve issue): TF Serving routes, version policy and reload, Prometheus metrics.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rtinfer import __version__
from rtinfer.artifact import load_artifact
from rtinfer.engines import Session, load
from rtinfer.errors import EngineError, InvalidInputError, RtinferError
from rtinfer.serve.batcher import Batcher, BatchingConfig, QueueFullError, QueueTimeoutError
from rtinfer.serve.protocol import decode_infer_request, encode_infer_response

__all__ = ["ServedModel", "create_app", "load_repository"]

_LOG = logging.getLogger("rtinfer.serve")
_HEADER_LENGTH = "inference-header-content-length"


@dataclass
class ServedModel:
    name: str
    version: str
    session: Session
    batcher: Batcher | None = None

    @property
    def batchable(self) -> bool:
        """Every input and output has a leading batch dimension to concatenate along."""
        spec = self.session.spec
        return all(t.shape and not isinstance(t.shape[0], int)
                   for t in (*spec.inputs, *spec.outputs))

    def metadata(self) -> dict[str, Any]:
        def tensor(t: Any) -> dict[str, Any]:
            return {"name": t.name, "datatype": t.kserve_datatype,
                    "shape": [d if isinstance(d, int) else -1 for d in t.shape]}

        return {"name": self.name, "versions": [self.version], "platform": "onnxruntime_onnx",
                "inputs": [tensor(t) for t in self.session.spec.inputs],
                "outputs": [tensor(t) for t in self.session.spec.outputs]}


def load_repository(repo: str | Path, *, engine: str | None = None,
                    threads: int | None = None) -> dict[str, ServedModel]:
    """Every model folder of ``repo`` at its highest version, loaded and warmed up."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RtinferError(f"model repository '{repo}' is not a folder")
    models = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        art = load_artifact(folder)
        models[art.name] = ServedModel(art.name, str(art.version),
                                       load(art.model, engine, threads, warmup=True))
        _LOG.info("loaded %s version %s on %s", art.name, art.version, engine or "onnxruntime")
    if not models:
        raise RtinferError(f"model repository '{repo}' holds no models (<name>/<version>/)")
    return models


def create_app(models: dict[str, ServedModel] | str | Path, *, api_key: str | None = None,
               max_body_bytes: int = 64 << 20,
               batching: BatchingConfig | None = None) -> Starlette:
    """The ASGI app over already-loaded ``models`` (or a repository path to load).

    With ``batching``, each model whose inputs and outputs share a leading batch dimension
    gets a dynamic batcher (see :mod:`rtinfer.serve.batcher`).
    """
    served = models if isinstance(models, dict) else load_repository(models)
    if batching is not None:
        for model in served.values():
            if model.batchable:
                model.batcher = Batcher(model.session, batching)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        given = request.headers.get("x-api-key") or request.headers.get(
            "authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), api_key.encode())

    def model_for(request: Request) -> ServedModel | JSONResponse:
        name = request.path_params["model"]
        model = served.get(name)
        if model is None:
            return error(404, f"unknown model '{name}'; this server has {sorted(served)}")
        version = request.path_params.get("version")
        if version is not None and version != model.version:
            return error(404, f"model '{name}' has no version {version}; it serves version "
                              f"{model.version}")
        return model

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "rtinfer", "version": __version__,
                             "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def model_ready(request: Request) -> Response:
        found = model_for(request)
        return found if isinstance(found, JSONResponse) else Response(status_code=200)

    async def model_metadata(request: Request) -> Response:
        found = model_for(request)
        return found if isinstance(found, JSONResponse) else JSONResponse(found.metadata())

    async def infer(request: Request) -> Response:
        if not authorised(request):
            return error(401, "missing or wrong API key: send it as 'Authorization: Bearer "
                              "<key>' or 'X-API-Key: <key>'")
        found = model_for(request)
        if isinstance(found, JSONResponse):
            return found
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return error(413, f"request body of {int(declared):,} bytes is over this server's "
                              f"limit of {max_body_bytes:,} bytes; send smaller batches")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return error(413, f"request body is over this server's limit of "
                                  f"{max_body_bytes:,} bytes; send smaller batches")
        header = request.headers.get(_HEADER_LENGTH)
        try:
            parsed, feeds, binary = decode_infer_request(
                bytes(body), int(header) if header and header.isdigit() else None,
                found.session.spec)
            if found.batcher is not None:
                timeout = (parsed.get("parameters") or {}).get("timeout")
                outputs = await found.batcher.submit(
                    feeds, timeout_us=int(timeout) if isinstance(timeout, int) else None)
            else:
                outputs = await run_in_threadpool(found.session.run_validated, feeds)
            payload, json_len = encode_infer_response(found.name, found.version, parsed,
                                                      outputs, binary)
        except InvalidInputError as exc:
            return error(400, str(exc))
        except QueueFullError as exc:
            return JSONResponse({"error": f"model '{found.name}' is busy: {exc}; retry "
                                          "shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        except QueueTimeoutError as exc:
            return error(503, f"model '{found.name}': {exc}")
        except EngineError as exc:
            _LOG.warning("inference failed for %s: %s", found.name, exc)
            return error(500, str(exc))
        headers = {_HEADER_LENGTH: str(json_len)} if json_len is not None else {}
        media = "application/octet-stream" if json_len is not None else "application/json"
        return Response(payload, headers=headers, media_type=media)

    async def model_stats(request: Request) -> Response:
        found = model_for(request)
        if isinstance(found, JSONResponse):
            return found
        stats = found.batcher.stats if found.batcher else None
        return JSONResponse({"model_stats": [{
            "name": found.name, "version": found.version,
            "inference_count": stats.rows if stats else None,
            "execution_count": stats.batches if stats else None,
            "batch_sizes": {str(k): v for k, v in sorted(stats.batch_sizes.items())}
            if stats else {},
            "rejected": stats.rejected if stats else 0,
            "timed_out": stats.timed_out if stats else 0,
        }]})

    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", live),  # models load before the app exists: ready == live
        Route("/v2/models/{model}", model_metadata),
        Route("/v2/models/{model}/versions/{version}", model_metadata),
        Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/stats", model_stats),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.models = served
    return app
