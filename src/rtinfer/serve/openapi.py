"""The OpenAPI 3.0 document of ``rtinfer serve``'s HTTP routes (``GET /openapi.json``), so that
standard tools — schemathesis and other fuzzers, client generators, API gateways — can drive
the server: KServe v2 (Open Inference Protocol) and TF Serving REST request and response
schemas, the repository extension, and the API key as a security scheme.

    document = openapi()      # a dict; json.dumps(document) is what the route serves
"""

from __future__ import annotations

from typing import Any

from rtinfer import __version__
from rtinfer.serve.protocol import DTYPE_OF

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


def _schemas() -> dict[str, Any]:
    tensor_data = {"description": "Row-major data, flat or nested; strings for BYTES",
                   "oneOf": [{"type": "array", "items": {}}, {"type": "number"},
                             {"type": "boolean"}, {"type": "string"}]}
    parameters = {"type": "object", "additionalProperties": True}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "InferInput": {"type": "object", "required": ["name", "shape", "datatype"],
                       "properties": {"name": {"type": "string"},
                                      "shape": {"type": "array",
                                                "items": {"type": "integer", "minimum": 0}},
                                      "datatype": {"type": "string", "enum": sorted(DTYPE_OF)},
                                      "parameters": parameters, "data": tensor_data}},
        "InferRequestedOutput": {"type": "object", "required": ["name"],
                                 "properties": {"name": {"type": "string"},
                                                "parameters": parameters}},
        "InferRequest": {"type": "object", "required": ["inputs"],
                         "properties": {"id": {"type": "string"}, "parameters": parameters,
                                        "inputs": {"type": "array",
                                                   "items": _ref("InferInput")},
                                        "outputs": {"type": "array",
                                                    "items": _ref("InferRequestedOutput")}}},
        "InferOutput": {"type": "object", "required": ["name", "shape", "datatype"],
                        "properties": {"name": {"type": "string"},
                                       "shape": {"type": "array", "items": {"type": "integer"}},
                                       "datatype": {"type": "string"},
                                       "parameters": parameters, "data": tensor_data}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"],
                          "properties": {"model_name": {"type": "string"},
                                         "model_version": {"type": "string"},
                                         "id": {"type": "string"},
                                         "parameters": parameters,
                                         "outputs": {"type": "array",
                                                     "items": _ref("InferOutput")}}},
        "TensorMetadata": {"type": "object",
                           "properties": {"name": {"type": "string"},
                                          "datatype": {"type": "string"},
                                          "shape": {"type": "array",
                                                    "items": {"type": "integer"}}}},
        "ModelMetadata": {"type": "object", "required": ["name", "platform", "inputs",
                                                         "outputs"],
                          "properties": {"name": {"type": "string"},
                                         "versions": {"type": "array",
                                                      "items": {"type": "string"}},
                                         "platform": {"type": "string"},
                                         "inputs": {"type": "array",
                                                    "items": _ref("TensorMetadata")},
                                         "outputs": {"type": "array",
                                                     "items": _ref("TensorMetadata")}}},
        "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"],
                           "properties": {"name": {"type": "string"},
                                          "version": {"type": "string"},
                                          "extensions": {"type": "array",
                                                         "items": {"type": "string"}}}},
        "RepositoryIndex": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "version": {"type": "string"},
                                             "state": {"type": "string"},
                                             "reason": {"type": "string"}}}},
        "PredictRequest": {"type": "object", "description": 'Either "instances" (row form) '
                           'or "inputs" (columnar form), never both',
                           "properties": {"signature_name": {"type": "string"},
                                          "instances": {"type": "array", "items": {}},
                                          "inputs": {}}},
        "PredictResponse": {"type": "object",
                            "properties": {"predictions": {}, "outputs": {}}},
        "ModelStatus": {"type": "object", "properties": {"model_version_status": {
            "type": "array", "items": {"type": "object"}}}},
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
