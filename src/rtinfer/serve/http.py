"""The HTTP plumbing the app and both route modules share (KServe v2, TF Serving): the body
read under the size limit and the JSON error response. Its own module, so the routes never
import the app that mounts them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from rtinfer.errors import BodyTooLargeError
from rtinfer.serve.handler import Failure

__all__ = ["error_response", "read_body"]


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
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(f"request body is over this server's limit of {limit:,} "
                                    "bytes; send smaller batches")
    return bytes(body)
