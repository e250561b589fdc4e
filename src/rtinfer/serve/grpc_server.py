"""The Open Inference Protocol over gRPC (Triton's ``inference.GRPCInferenceService``), beside
HTTP in the same process and on the same request path: decode -> validate -> dynamic batcher
-> engine -> encode, with the same metrics, versions, API key and limits.

    rtinfer serve repo --port 8000 --grpc-port 8001
    client = tritonclient.grpc.InferenceServerClient("127.0.0.1:8001")   # unchanged

The protos are the ones ``tritonclient[grpc]`` ships (Triton's, not KServe's: the two differ on
the wire for ``RepositoryModelLoad``, and importing both stubs in one process fails). The server
is a ``grpc.aio`` server started in the HTTP app's lifespan, on the same event loop, so one
batcher queue serves both protocols.

- Inputs come as typed ``contents`` or as ``raw_input_contents`` (one little-endian, row-major
  buffer per input, BYTES as 4-byte lengths + bytes); outputs go back in
  ``raw_output_contents``, as Triton answers and tritonclient reads.
- ``authorization: Bearer <key>`` or ``x-api-key: <key>`` in the call metadata when the server
  has a key (ServerLive and ServerReady answer without it, like the HTTP health routes).
- Message limits follow ``--max-body-mb`` (receiving); errors map to status codes:
  INVALID_ARGUMENT (a bad request, naming the input), NOT_FOUND, UNAVAILABLE (full queue or
  draining; trailing metadata ``retry-after: 1``), DEADLINE_EXCEEDED (queue timeout),
  RESOURCE_EXHAUSTED (over the size limit), UNAUTHENTICATED, INTERNAL (a logged server fault).
- ``ModelStreamInfer`` answers each request of the stream in order; a failed one yields its
  ``error_message`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from rtinfer import __version__
from rtinfer._deps import require
from rtinfer.errors import InvalidInputError, ModelNotFoundError, RtinferError
from rtinfer.serve.app import check_api_key, presented_key
from rtinfer.serve.handler import Failure, classify, refused, run, timeout_param
from rtinfer.serve.protocol import (
    DECODE_INLINE_BYTES,
    EXTENSIONS,
    ProtocolError,
    check_outputs,
    datatype_of,
    decode_tensor,
    prepare_feeds,
    wire_tensor,
)
from rtinfer.serve.repository import ModelRepository
from rtinfer.spec import DATATYPES, triton_type

__all__ = ["GrpcServer", "decode_model_infer"]

_OPEN_METHODS = ("/ServerLive", "/ServerReady")
# Typed contents field of each datatype (FP16 and BF16 travel only as raw bytes).
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
             "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
             "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _protos() -> tuple[Any, Any, Any]:
    require("grpc", "Serving over gRPC")
    service = require("tritonclient.grpc.service_pb2", "Serving over gRPC")
    stubs = require("tritonclient.grpc.service_pb2_grpc", "Serving over gRPC")
    config = require("tritonclient.grpc.model_config_pb2", "Serving over gRPC")
    return service, stubs, config


def _parameters(params: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain values."""
    out = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, choice) if choice else None
    return out


def decode_model_infer(request: Any, spec: Any, raw: Any = None
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """A ``ModelInferRequest`` as checked feeds, its parameters and the outputs it asks for.

    Each input is put in the JSON form's shape (``data`` from its typed contents, or
    ``binary_data_size`` over its raw buffer) and decoded by the same code as over HTTP, so
    both protocols accept and refuse exactly the same tensors."""
    raws = list(request.raw_input_contents)
    if raws and len(raws) != len(request.inputs):
        raise ProtocolError(f"raw_input_contents holds {len(raws)} buffers for "
                            f"{len(request.inputs)} inputs; send one per input, in order")
    dtypes = spec.input_dtypes
    feeds: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                "shape": list(tensor.shape)}
        blob = b""
        if raws:
            blob = raws[i]
            item["parameters"] = {"binary_data_size": len(blob)}
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise ProtocolError(f"input '{tensor.name}': datatype {tensor.datatype!r} "
                                    "has no typed contents; send it in raw_input_contents"
                                    if tensor.datatype in DATATYPES else
                                    f"input '{tensor.name}' has datatype {tensor.datatype!r}; "
                                    f"expected one of {sorted(DATATYPES)}")
            item["data"] = list(getattr(tensor.contents, field))
        name, array, _ = decode_tensor(item, memoryview(blob), dtypes)
        if name in feeds:
            raise ProtocolError(f"input '{name}' is given twice")
        feeds[name] = array
    wanted = [o.name for o in request.outputs]
    if wanted:
        check_outputs(wanted, spec)
    return prepare_feeds(feeds, spec, raw), _parameters(request.parameters), wanted


class _Denied(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class GrpcServer:
    """The gRPC front end of one app: ``await start()`` in its lifespan, ``await
    stop(grace)`` before the repository drains."""

    def __init__(self, repo: ModelRepository, metrics: Any, control: Any, *,
                 host: str = "127.0.0.1", port: int = 8001, api_key: str | None = None,
                 max_message_bytes: int = 64 << 20, reuse_port: bool = False) -> None:
        self.repo, self.metrics, self.control = repo, metrics, control
        self.host, self.port = host, port
        self.key = check_api_key(api_key).encode() if api_key is not None else None
        self.max_message_bytes = max_message_bytes
        self.reuse_port = reuse_port  # worker processes share the port (SO_REUSEPORT)
        self._server: Any = None

    async def start(self) -> int:
        """Listen; the port bound (useful with port 0)."""
        import grpc

        service, stubs, config = _protos()
        options = [("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.max_send_message_length", -1),
                   ("grpc.so_reuseport", 1 if self.reuse_port else 0)]
        interceptors = [_key_check(self.key)] if self.key is not None else []
        self._server = grpc.aio.server(options=options, interceptors=interceptors)
        self._server.add_generic_rpc_handlers(
            [_handlers(service, _servicer(stubs, service, config, self))])
        try:
            bound = self._server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError:  # grpcio >= 1.5x raises where older ones returned 0
            bound = 0
        if not bound:
            raise RtinferError(f"cannot listen for gRPC on {self.host}:{self.port}; is the "
                               "port taken? choose another with --grpc-port")
        await self._server.start()
        self.port = bound
        return int(bound)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let running ones finish for up to ``grace_s``."""
        if self._server is not None:
            await self._server.stop(grace_s)


def _key_check(key: bytes) -> Any:
    """A grpc.aio server interceptor: UNAUTHENTICATED unless the call's metadata carries the
    key (``authorization: Bearer <key>`` or ``x-api-key``); health calls are open."""
    import hmac

    import grpc

    message = ("missing or wrong API key: send it as call metadata 'authorization: Bearer "
               "<key>' or 'x-api-key: <key>'")

    async def deny(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(requests: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    denied = grpc.unary_unary_rpc_method_handler(deny)
    denied_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    class KeyCheck(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                    details: Any) -> Any:
            if details.method.endswith(_OPEN_METHODS):
                return await continuation(details)
            metadata = [(k.encode(), v if isinstance(v, bytes) else str(v).encode())
                        for k, v in details.invocation_metadata or ()]
            given = presented_key(metadata)
            if given is not None and hmac.compare_digest(given, key):
                return await continuation(details)
            return denied_stream if details.method.endswith("/ModelStreamInfer") else denied

    return KeyCheck()


class _Malformed:
    """A request message that did not parse (it stands in for the message)."""

    def __init__(self, error: Exception) -> None:
        self.error = str(error)


def _handlers(pb: Any, servicer: Any) -> Any:
    """The service's method handlers, registered by hand rather than by the generated
    ``add_GRPCInferenceServiceServicer_to_server``: there a message that fails to parse is
    answered UNKNOWN ("Unexpected DecodeError"), a server fault's status for a client's
    mistake; here it is INVALID_ARGUMENT. Methods the servicer leaves out answer
    UNIMPLEMENTED."""
    import grpc
    from google.protobuf.message import DecodeError

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    base = type(servicer).__mro__[1]  # the generated servicer: what is not overridden
    handlers = {}
    for method in service.methods:
        own = getattr(type(servicer), method.name, None)
        if own is None or own is getattr(base, method.name, None):
            continue
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)

        def parse(data: bytes, kind: Any = request_type) -> Any:
            try:
                return kind.FromString(data)
            except DecodeError as exc:
                return _Malformed(exc)

        impl = getattr(servicer, method.name)
        if method.name == "ModelStreamInfer":  # answers a malformed message in the stream
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                impl, request_deserializer=parse,
                response_serializer=response_type.SerializeToString)
            continue

        async def unary(request: Any, context: Any, impl: Any = impl) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"the request is not a valid protobuf message of this "
                                    f"call: {request.error}")
            return await impl(request, context)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=parse,
            response_serializer=response_type.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _servicer(stubs: Any, pb: Any, mc: Any, front: GrpcServer) -> Any:
    """The servicer (a subclass of tritonclient's generated base, built once the protos are
    imported): every RPC of the service but the shared-memory, trace and log ones, which
    answer UNIMPLEMENTED."""
    import grpc

    repo, metrics, control = front.repo, front.metrics, front.control
    codes = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
             413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
             500: grpc.StatusCode.INTERNAL}

    def status_of(failure: Failure) -> Any:
        if failure.reason == "TIMEOUT":
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return codes.get(failure.v2_status, grpc.StatusCode.INTERNAL)

    async def abort(context: Any, failure: Failure) -> None:
        trailing = (("retry-after", "1"),) if failure.retry_after else ()
        await context.abort(status_of(failure), failure.message, trailing_metadata=trailing)

    async def control_call(action: Callable[[str], Awaitable[None]], name: str,
                           context: Any) -> None:
        """Load or unload; an unknown model is NOT_FOUND, anything refused (a name that
        leaves the repository, a version that fails to load) INVALID_ARGUMENT, as over
        HTTP's 404 and 400."""
        try:
            await action(name)
        except ModelNotFoundError as exc:
            await abort(context, classify(exc))
        except RtinferError as exc:
            await abort(context, classify(InvalidInputError(str(exc))))

    def resolve(name: str, version: str) -> Any:
        return repo.resolve(name, version or None)

    def tensors(kind: Any, entries: list[dict[str, Any]]) -> list[Any]:
        return [kind(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in entries]

    async def infer(request: Any) -> Any:
        """One inference; raises _Denied with the failure (already counted)."""
        started = time.perf_counter()
        served = None
        try:
            served = resolve(request.model_name, request.model_version)
            served.batcher.admit()
            args = (request, served.session.spec, served.raw)
            if request.ByteSize() > DECODE_INLINE_BYTES:
                feeds, params, wanted = await asyncio.to_thread(decode_model_infer, *args)
            else:
                feeds, params, wanted = decode_model_infer(*args)
            timeout = timeout_param(params)
        except Exception as exc:
            raise _Denied(refused(exc, request.model_name, served, metrics)) from None
        try:
            outputs = await run(served, feeds, timeout, metrics, started)
        except Exception as exc:
            raise _Denied(classify(exc, request.model_name)) from None
        response = pb.ModelInferResponse(model_name=served.name, model_version=served.version,
                                         id=request.id)
        for name in wanted or list(outputs):
            array = outputs[name]
            response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(wire_tensor(array))
        return response

    class Servicer(stubs.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=repo.ready())

        async def ModelReady(self, request: Any, context: Any) -> Any:
            try:
                resolve(request.name, request.version)
            except ModelNotFoundError:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name="rtinfer", version=__version__,
                                             extensions=EXTENSIONS)

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            try:
                served = resolve(request.name, request.version)
            except ModelNotFoundError as exc:
                return await abort(context, classify(exc))
            versions = [str(v) for v in sorted(repo.served.get(served.name, {}))]
            meta = served.metadata(versions)
            kind = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=tensors(kind, meta["inputs"]), outputs=tensors(kind, meta["outputs"]))

        async def ModelConfig(self, request: Any, context: Any) -> Any:
            try:
                served = resolve(request.name, request.version)
            except ModelNotFoundError as exc:
                return await abort(context, classify(exc))
            meta, cfg = served.metadata(), served.batcher.config
            batching = cfg.max_batch_size > 1

            def io(kind: Any, t: dict[str, Any]) -> Any:
                dims = t["shape"][1:] if batching else t["shape"]
                known = t["datatype"] in DATATYPES
                return kind(name=t["name"], data_type=mc.DataType.Value(
                    triton_type(t["datatype"]) if known else "TYPE_INVALID"), dims=dims)

            config = mc.ModelConfig(
                name=served.name, platform=meta["platform"],
                max_batch_size=cfg.max_batch_size if batching else 0,
                input=[io(mc.ModelInput, t) for t in meta["inputs"]],
                output=[io(mc.ModelOutput, t) for t in meta["outputs"]],
                instance_group=[mc.ModelInstanceGroup(count=len(served.sessions),
                                                      kind=mc.ModelInstanceGroup.KIND_CPU)])
            if batching:
                config.dynamic_batching.max_queue_delay_microseconds = cfg.max_queue_delay_us
                config.dynamic_batching.preferred_batch_size.extend(cfg.preferred_batch_size)
            return pb.ModelConfigResponse(config=config)

        async def ModelStatistics(self, request: Any, context: Any) -> Any:
            chosen = []
            if request.name:
                try:
                    chosen = [resolve(request.name, request.version)]
                except ModelNotFoundError as exc:
                    return await abort(context, classify(exc))
            else:
                chosen = repo.models()
            out = pb.ModelStatisticsResponse()
            for served in chosen:
                stats = served.batcher.stats
                entry = out.model_stats.add(name=served.name, version=served.version,
                                            inference_count=stats.rows,
                                            execution_count=stats.batches)
                entry.inference_stats.fail.count = stats.rejected + stats.timed_out
                for size, count in sorted(stats.batch_sizes.items()):
                    entry.batch_stats.add(batch_size=size).compute_infer.count = count
            return out

        async def RepositoryIndex(self, request: Any, context: Any) -> Any:
            out = pb.RepositoryIndexResponse()
            for entry in repo.index():
                if request.ready and entry["state"] != "READY":
                    continue
                out.models.add(name=entry["name"], version=entry.get("version", ""),
                               state=entry["state"], reason=entry["reason"])
            return out

        async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
            await control_call(control.load_model, request.model_name, context)
            return pb.RepositoryModelLoadResponse()

        async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
            await control_call(control.unload_model, request.model_name, context)
            return pb.RepositoryModelUnloadResponse()

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            try:
                return await infer(request)
            except _Denied as denied:
                return await abort(context, denied.failure)

        async def ModelStreamInfer(self, requests: AsyncIterator[Any],
                                   context: Any) -> AsyncIterator[Any]:
            async for request in requests:  # in order: each answered before the next
                if isinstance(request, _Malformed):
                    yield pb.ModelStreamInferResponse(
                        error_message=f"not a valid ModelInferRequest: {request.error}")
                    continue
                try:
                    yield pb.ModelStreamInferResponse(infer_response=await infer(request))
                except _Denied as denied:
                    yield pb.ModelStreamInferResponse(error_message=denied.failure.message)

    return Servicer()
