"""The HTTP plumbing the app and both route modules share (KServe v2, TF Serving): the body
read under the size limit and the JSON error response. Its own module, so the routes never
import the app that mounts them."""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from rtinfer.errors import BodyTooLargeError
from rtinfer.serve.handler import Failure

__all__ = ["UVICORN", "BodyResponse", "error_response", "read_body"]

#: How ``rtinfer serve`` runs uvicorn, one process or several: no access log (it would hold
#: client addresses and paths per request), no ``server: uvicorn`` header (nothing to learn
#: about the stack), and X-Forwarded-* ignored (nothing here reads the client's address, and
#: a local client could otherwise claim any).
UVICORN: dict[str, Any] = {"log_level": "warning", "access_log": False,
                           "server_header": False, "proxy_headers": False}


def error_response(failure: Failure) -> JSONResponse:
    headers = {"Retry-After": "1"} if failure.retry_after else None
    return JSONResponse({"error": failure.message}, status_code=failure.v2_status,
                        headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (:class:`BodyTooLargeError`) as soon as it passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and \
            int(declared) > limit:
        raise BodyTooLargeError(f"request body of {int(declared):,} bytes is over this "
                                f"server's limit of {limit:,} bytes; send smaller batches")
    # The ASGI messages themselves, not request.stream(): an async generator per request
    # costs more than a small body takes to arrive, and most bodies come in one message.
    body = bytearray()
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if not body and not more and len(chunk) <= limit:
            return bytes(chunk)
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(f"request body is over this server's limit of {limit:,} "
                                    "bytes; send smaller batches")
        if not more:
            return bytes(body)


class BodyResponse(Response):
    """A 200 with a finished body: its raw headers written directly (Starlette's own
    ``Response`` parses and normalises headers on every call; the inference routes pay for
    that on every request). ``media_type`` as bytes, ``headers`` as raw ``(name, value)``
    pairs in lower case."""

    def __init__(self, body: bytes, media_type: bytes = b"application/json",
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", b"%d" % len(body)),
                            (b"content-type", media_type), *headers]
