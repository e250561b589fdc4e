"""The OpenAPI 3.0 document of ``rtinfer serve``'s HTTP routes (``GET /openapi.json``), so that
standard tools — schemathesis and other fuzzers, client generators, API gateways — can drive
the server: KServe v2 (Open Inference Protocol) and TF Serving REST request and response
schemas, the repository extension, and the API key as a security scheme.

    document = openapi()      # a dict; json.dumps(document) is what the route serves
"""

from __future__ import annotations

from typing import Any

from rtinfer import __version__
from rtinfer.spec import DATATYPES

__all__ = ["openapi"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "Bad request: the message names the field and the fix",
           401: "Missing or wrong API key", 404: "No such model or version",
           413: "Body over the server's limit", 429: "Queue full (TF Serving)",
           503: "Unavailable: queue full or model draining (Retry-After)",
           504: "Deadline exceeded (TF Serving)"}
    return {str(c): {"description": why[c], **_json(_ref("Error"))} for c in codes}


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}


def _operation(summary: str, ok: dict[str, Any], params: list[str], *, body: str | None = None,
               errors: tuple[int, ...] = (401, 404), secured: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": [_param(p) for p in params],
                          "responses": {"200": ok, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(_ref(body))}
    if not secured:
        op["security"] = []
    return op


_STRING = {"type": "string"}
_PARAMETERS = {"type": "object", "additionalProperties": True}
_DATA = {"description": "Row-major data, flat or nested; strings for BYTES",
         "oneOf": [{"type": "array", "items": {}}, {"type": "number"}, {"type": "boolean"},
                   {"type": "string"}]}


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if required:
        out["required"] = list(required)
    out["properties"] = properties
    return out


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _schemas() -> dict[str, Any]:
    integers = _array({"type": "integer"})
    tensor = ("name", "shape", "datatype")
    index_entry = _object(name=_STRING, version=_STRING, state=_STRING, reason=_STRING)
    predict = _object(signature_name=_STRING, instances=_array({}), inputs={})
    predict["description"] = 'Either "instances" (row form) or "inputs" (columnar form), never both'
    return {
        "Error": _object(("error",), error=_STRING),
        "InferInput": _object(tensor, name=_STRING,
                              shape=_array({"type": "integer", "minimum": 0}),
                              datatype={"type": "string", "enum": sorted(DATATYPES)},
                              parameters=_PARAMETERS, data=_DATA),
        "InferRequestedOutput": _object(("name",), name=_STRING, parameters=_PARAMETERS),
        "InferRequest": _object(("inputs",), id=_STRING, parameters=_PARAMETERS,
                                inputs=_array(_ref("InferInput")),
                                outputs=_array(_ref("InferRequestedOutput"))),
        "InferOutput": _object(tensor, name=_STRING, shape=integers, datatype=_STRING,
                               parameters=_PARAMETERS, data=_DATA),
        "InferResponse": _object(("model_name", "outputs"), model_name=_STRING,
                                 model_version=_STRING, id=_STRING, parameters=_PARAMETERS,
                                 outputs=_array(_ref("InferOutput"))),
        "TensorMetadata": _object(name=_STRING, datatype=_STRING, shape=integers),
        "ModelMetadata": _object(("name", "platform", "inputs", "outputs"), name=_STRING,
                                 versions=_array(_STRING), platform=_STRING,
                                 inputs=_array(_ref("TensorMetadata")),
                                 outputs=_array(_ref("TensorMetadata"))),
        "ServerMetadata": _object(("name", "version", "extensions"), name=_STRING,
                                  version=_STRING, extensions=_array(_STRING)),
        "RepositoryIndex": _array(index_entry),
        "PredictRequest": predict,
        "PredictResponse": _object(predictions={}, outputs={}),
        "ModelStatus": _object(model_version_status=_array({"type": "object"})),
    }


def openapi() -> dict[str, Any]:
    """The document: every route, its parameters, bodies, answers and error statuses."""
    empty = {"description": "Yes (empty body)"}
    ok = {name: {"description": "OK", **_json(_ref(name))}
          for name in ("InferResponse", "ModelMetadata", "ServerMetadata", "RepositoryIndex",
                       "PredictResponse", "ModelStatus")}
    done = {"description": "Done", **_json({"type": "object"})}
    infer = _operation("Run inference (KServe v2; binary tensors with "
                       "Inference-Header-Content-Length)", ok["InferResponse"],
                       ["model"], body="InferRequest", errors=(400, 401, 404, 413, 503))
    infer_v = {**infer, "parameters": [_param("model"), _param("version")]}
    predict = _operation("Predict (TF Serving REST)", ok["PredictResponse"], ["model"],
                         body="PredictRequest", errors=(400, 401, 404, 413, 429, 503, 504))
    predict_v = {**predict, "parameters": [_param("model"), _param("version")]}
    m, v = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    t, tv = "/v1/models/{model}", "/v1/models/{model}/versions/{version}"
    paths: dict[str, Any] = {
        "/v2": {"get": _operation("Server metadata", ok["ServerMetadata"], [], errors=(401,))},
        "/v2/health/live": {"get": _operation("Liveness (no key needed)", empty, [],
                                              errors=(), secured=False)},
        "/v2/health/ready": {"get": _operation("Readiness (no key needed)", empty, [],
                                               errors=(503,), secured=False)},
        m: {"get": _operation("Model metadata", ok["ModelMetadata"], ["model"])},
        v: {"get": _operation("Model version metadata", ok["ModelMetadata"],
                              ["model", "version"])},
        m + "/ready": {"get": _operation("Model readiness", empty, ["model"])},
        v + "/ready": {"get": _operation("Model version readiness", empty,
                                         ["model", "version"])},
        m + "/stats": {"get": _operation("Model statistics", done, ["model"])},
        m + "/infer": {"post": infer},
        v + "/infer": {"post": infer_v},
        "/v2/repository/index": {"post": _operation("Repository index",
                                                    ok["RepositoryIndex"], [],
                                                    errors=(401,))},
        "/v2/repository/models/{model}/load": {"post": _operation(
            "Load (or reload) a model of the repository", done, ["model"],
            errors=(400, 401, 404))},
        "/v2/repository/models/{model}/unload": {"post": _operation(
            "Unload a model (in-flight requests finish)", done, ["model"],
            errors=(400, 401, 404))},
        "/v2/repository/models/{model}/guard/reset": {"post": _operation(
            "Switch a guarded model back from its reference after a rollback (rtinfer)",
            done, ["model"], errors=(400, 401, 404))},
        t + ":predict": {"post": predict},
        tv + ":predict": {"post": predict_v},
        t: {"get": _operation("Model status (TF Serving)", ok["ModelStatus"], ["model"])},
        tv: {"get": _operation("Model version status (TF Serving)", ok["ModelStatus"],
                               ["model", "version"])},
        t + "/metadata": {"get": _operation("Signature (TF Serving)", done, ["model"])},
        tv + "/metadata": {"get": _operation("Signature of a version (TF Serving)", done,
                                             ["model", "version"])},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "Text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(401)}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": {"description": "OpenAPI 3.0", **_json({"type": "object"})},
            **_errors(401)}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "rtinfer serve", "version": __version__,
                 "description": "KServe v2 (Open Inference Protocol) and TF Serving REST "
                                "over one model repository. Every route but the two health "
                                "routes needs the API key when the server has one."},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}}},
        "security": [{"bearer": []}, {"apiKey": []}],
    }
