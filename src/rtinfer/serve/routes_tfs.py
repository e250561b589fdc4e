"""TF Serving's REST API: ``:predict`` in row and columnar form, model status and metadata.

    POST /v1/models/{m}[/versions/{v}]:predict   {"instances": [...]} -> {"predictions": [...]}
                                                 {"inputs": {...}}    -> {"outputs": {...}}
    GET  /v1/models/{m}[/versions/{v}]           {"model_version_status": [...]}
    GET  /v1/models/{m}[/versions/{v}]/metadata  the signature (inputs and outputs)

Row form: one element per example; an object per example when the model has several inputs
(``{"instances": [{"a": [1, 2], "b": 3}, …]}``). Columnar form: a tensor for a single input or
an object of input name to tensor. JSON numbers take the input's declared dtype (TF Serving
does the same); a number that does not fit it (``1.5`` for an int64 input) is a 400.
Errors are ``{"error": "..."}``: 400 bad argument, 404 not found, 429 queue full, 503
unavailable, 504 deadline exceeded.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rtinfer.errors import InvalidInputError, ModelNotFoundError
from rtinfer.models.tflite_file import SIGNATURE
from rtinfer.serve._json import dumps, loads
from rtinfer.serve.handler import Failure, classify, refused, run
from rtinfer.serve.http import BodyResponse, read_body
from rtinfer.serve.raw import RawInputs
from rtinfer.serve.repository import ModelRepository
from rtinfer.serve.tensors import as_text, from_json, object_array, text_elements
from rtinfer.spec import ModelSpec

__all__ = ["decode_predict", "routes"]

_TF_DTYPE = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF",
             "int64": "DT_INT64", "int32": "DT_INT32", "int16": "DT_INT16", "int8": "DT_INT8",
             "uint8": "DT_UINT8", "bool": "DT_BOOL", "object": "DT_STRING"}


def decode_predict(request: Any, spec: ModelSpec, raw: RawInputs | None = None
                   ) -> tuple[dict[str, np.ndarray], bool]:
    """Feeds from a ``:predict`` body, and whether it used the row (``instances``) form.

    With ``raw`` (a kit's raw inputs), instances may be raw examples: sentences, records of
    named fields, or ``{"b64": …}`` encoded images.
    """
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise InvalidInputError('a predict request is a JSON object with either "instances" '
                                '(row form) or "inputs" (columnar form), not both')
    signature = request.get("signature_name", SIGNATURE)
    if not isinstance(signature, str):
        raise InvalidInputError('"signature_name" must be a string')
    if signature not in ("", SIGNATURE):  # as TF Serving answers a name it does not have
        raise InvalidInputError(f"serving signature name {str(signature)[:64]!r} not found; "
                                f"this model's only signature is '{SIGNATURE}'")
    names = [t.name for t in spec.inputs]
    row = "instances" in request
    if row:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInputError('"instances" must be a non-empty list, one item per example')
        if raw is not None and _is_raw(instances, raw):
            if not all(isinstance(i, dict) and raw.matches(list(i)) for i in instances):
                instances = [{raw.names[0]: i} for i in instances]
            raw_columns = {n: np.array([_raw_value(i[n]) for i in instances], dtype=object)
                           for n in raw.names}
            return spec.validate(raw.convert(raw_columns)), True
        if all(isinstance(i, dict) for i in instances) and not (
                len(names) == 1 and all(set(i) == {"b64"} for i in instances)):
            missing = [n for n in names if any(n not in i for i in instances)]
            unknown = sorted({k for i in instances for k in i} - set(names))
            if missing or unknown:
                raise InvalidInputError(f"every instance needs the input(s) {names}, and only "
                                        f"those; missing {missing}, unknown {unknown}")
            columns = {n: [i[n] for i in instances] for n in names}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise InvalidInputError(f"the model takes several inputs {names}: give each "
                                    'instance as an object {"name": value, ...}')
    else:
        inputs = request["inputs"]
        if isinstance(inputs, dict):
            columns = inputs
        elif len(names) == 1:
            columns = {names[0]: inputs}
        else:
            raise InvalidInputError(f"the model takes several inputs {names}: give \"inputs\" "
                                    'as an object {"name": tensor, ...}')
    dtypes = {t.name: np.dtype(t.dtype) for t in spec.inputs}
    feeds = {}
    for name, value in columns.items():
        if name not in dtypes:
            raise InvalidInputError(f"unknown input '{name}'; the model takes {names}")
        feeds[name] = _tensor(name, value, dtypes[name])
    return spec.validate(feeds), row


def _is_raw(instances: list[Any], raw: RawInputs) -> bool:
    first = instances[0]
    if isinstance(first, dict) and set(first) != {"b64"}:
        return raw.matches(list(first))
    return len(raw.names) == 1 and isinstance(first, (str, dict))


def _raw_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:  # TF Serving's binary convention
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError):
            raise InvalidInputError("a {\"b64\": …} value is not valid base64") from None
    return value


def _tensor(name: str, value: Any, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype.kind != "O":
        return from_json(name, value, dtype)
    # A string input: strings, or TF Serving's {"b64": ...} for bytes, nested as the shape.
    def text(v: Any) -> Any:
        if isinstance(v, list):
            return [text(e) for e in v]
        v = _raw_value(v)
        if not isinstance(v, (str, bytes)):
            raise InvalidInputError(f"input '{name}' is a string input; it holds a "
                                    f"{type(v).__name__}")
        return v
    nested = text(value)
    try:
        array = np.array(nested, dtype=object)
    except ValueError as exc:
        raise InvalidInputError(f"input '{name}' is ragged: {exc}") from None
    if any(isinstance(e, list) for e in array.reshape(-1)):
        raise InvalidInputError(f"input '{name}' is ragged (rows of different lengths)")
    return as_text(name, array)


def _jsonable(name: str, array: np.ndarray) -> np.ndarray:
    """A string output as str elements (bytes decoded as UTF-8); numbers as they are."""
    if array.dtype.kind not in "OSU":
        return array
    return object_array(text_elements(name, array), array.shape)


def routes(ctx: dict[str, Any]) -> list[Route]:
    repo: ModelRepository = ctx["repo"]
    metrics = ctx["metrics"]
    limit: int = ctx["limit"]

    def error(failure: Failure) -> JSONResponse:
        headers = {"Retry-After": "1"} if failure.retry_after else None
        return JSONResponse({"error": failure.message}, status_code=failure.tfs_status,
                            headers=headers)

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["model"]
        served = None
        try:
            body = await read_body(request, limit)
            served = repo.resolve(name, request.path_params.get("version"))
            served.batcher.admit()  # a full queue refuses before paying for the decode
            try:
                parsed = loads(body)
            except (ValueError, RecursionError) as exc:
                raise InvalidInputError(f"request body is not valid JSON: {exc}") from None
            feeds, row = decode_predict(parsed, served.session.spec, served.raw)
        except Exception as exc:
            return error(refused(exc, name, served, metrics))
        try:
            outputs = await run(served, feeds, None, metrics, started)
            outputs = {k: _jsonable(k, v) for k, v in outputs.items()}
        except Exception as exc:
            return error(classify(exc, name))
        if row:
            names = list(outputs)
            if len(names) == 1:
                answer: dict[str, Any] = {"predictions": outputs[names[0]]}
            else:
                count = len(outputs[names[0]])
                answer = {"predictions": [{k: outputs[k][i] for k in names}
                                          for i in range(count)]}
        else:
            answer = {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
        return BodyResponse(dumps(answer))

    async def status(request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params.get("version")
        if name not in repo.states:
            return error(classify(ModelNotFoundError(f"unknown model '{name}'")))
        entries = []
        for entry in repo.index():
            if entry["name"] != name or (version and entry.get("version") != version):
                continue
            ok = entry["state"] == "READY"
            entries.append({"version": entry.get("version", "0"),
                            "state": "AVAILABLE" if ok else "END",
                            "status": {"error_code": "OK" if ok else "UNKNOWN",
                                       "error_message": entry["reason"]}})
        if version and not entries:
            return error(classify(ModelNotFoundError(f"model '{name}' has no version "
                                                     f"{version}")))
        return JSONResponse({"model_version_status": entries})

    async def metadata(request: Request) -> Response:
        try:
            served = repo.resolve(request.path_params["model"],
                                  request.path_params.get("version"))
        except ModelNotFoundError as exc:
            return error(classify(exc))

        def sig(tensors: Any) -> dict[str, Any]:
            return {t.name: {"name": t.name, "dtype": _TF_DTYPE.get(t.dtype, "DT_INVALID"),
                             "tensor_shape": {"dim": [{"size": str(d if isinstance(d, int)
                                                                   else -1)}
                                                      for d in t.shape]}}
                    for t in tensors}

        spec = served.session.spec
        signature = {"inputs": sig(spec.inputs), "outputs": sig(spec.outputs),
                     "method_name": "tensorflow/serving/predict"}
        return JSONResponse({
            "model_spec": {"name": served.name, "signature_name": "",
                           "version": served.version},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}}})

    model = "/v1/models/{model}"
    version = "/v1/models/{model}/versions/{version}"
    return [
        Route(model + ":predict", predict, methods=["POST"]),
        Route(version + ":predict", predict, methods=["POST"]),
        Route(model + "/metadata", metadata),
        Route(version + "/metadata", metadata),
        Route(model, status),
        Route(version, status),
    ]
