"""The serving contract, free of any HTTP framework: run feeds through a model version's
batcher, count the outcome, and map every failure to a reason and a status code.

    outputs = await run(served, feeds, timeout_us=None, metrics=metrics)

The HTTP routes (KServe v2 and TF Serving) call this the same way; a Ray Serve deployment or a
gRPC front end could too. Failures are :class:`Failure` values: a reason for the metrics, the
status each protocol uses, and a message that names the problem.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtinfer.errors import (
    BodyTooLargeError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    QueueFullError,
    QueueTimeoutError,
    RtinferError,
    UnsafePathError,
)
from rtinfer.serve.metrics import ServerMetrics
from rtinfer.serve.model import ServedModel

__all__ = ["Failure", "classify", "refused", "run", "timeout_param"]

_LOG = logging.getLogger("rtinfer.serve")


@dataclass(frozen=True)
class Failure:
    reason: str        # the metrics' failure reason
    v2_status: int     # Open Inference Protocol status
    tfs_status: int    # TF Serving REST status
    message: str
    retry_after: bool = False


def classify(exc: BaseException, model: str | None = None, *, log: bool = True) -> Failure:
    """The reason, statuses and message for ``exc`` raised while serving ``model``.

    Client mistakes are 4xx; a 5xx is a server fault and is logged here (``log``), by
    exception type and message, never with the request's payload.
    """
    where = f"model '{model}': " if model else ""
    if isinstance(exc, BodyTooLargeError):
        return Failure("BAD_REQUEST", 413, 413, str(exc))
    if isinstance(exc, ModelNotFoundError):
        return Failure("NOT_FOUND", 404, 404, str(exc))
    if isinstance(exc, (InvalidInputError, UnsafePathError)):
        return Failure("BAD_REQUEST", 400, 400, str(exc))
    if isinstance(exc, QueueFullError):
        return Failure("REJECTED", 503, 429, f"model '{model}' is busy: {exc}; retry shortly",
                       retry_after=True)
    if isinstance(exc, QueueTimeoutError):
        return Failure("TIMEOUT", 503, 504, f"{where}{exc}")
    if isinstance(exc, ModelUnavailableError):
        return Failure("UNAVAILABLE", 503, 503, f"{where}{exc}; retry", retry_after=True)
    known = isinstance(exc, RtinferError)  # an engine's failure: its message says why
    if log:
        _LOG.error("%sserver fault: %s: %s", where, type(exc).__name__, str(exc)[:500],
                   exc_info=None if known else exc)
    if known:
        return Failure("BACKEND", 500, 500, f"{where}inference failed: {exc}")
    return Failure("BACKEND", 500, 500, f"{where}internal server error "
                                        f"({type(exc).__name__}); the server log has it")


def refused(exc: BaseException, model: str, served: ServedModel | None,
            metrics: ServerMetrics | None) -> Failure:
    """:func:`classify` for a request that never reached the batcher (its body, decode or
    admission failed): a client mistake or a full queue is counted against the version it
    named, whichever front end it came through."""
    failure = classify(exc, model)
    if served is not None and metrics is not None and failure.reason in ("BAD_REQUEST",
                                                                         "REJECTED"):
        metrics.request(served.name, served.version, 0.0, failure.reason)
    return failure


async def run(served: ServedModel, feeds: dict[str, np.ndarray], timeout_us: int | None,
              metrics: ServerMetrics | None, started: float | None = None
              ) -> dict[str, np.ndarray]:
    """The model version's outputs for validated ``feeds``, counted in ``metrics``."""
    started = time.perf_counter() if started is None else started
    try:
        outputs = await served.batcher.submit(feeds, timeout_us=timeout_us)
    except Exception as exc:
        reason = classify(exc, log=False).reason  # the route classifies and logs it
        if metrics is not None:
            metrics.request(served.name, served.version, 0.0, reason)
        raise
    if metrics is not None:
        metrics.request(served.name, served.version, time.perf_counter() - started, None)
    if served.guard is not None:  # after the answer exists; queues at most, never waits
        served.guard.observe(feeds, outputs)
    return outputs


def timeout_param(parameters: Any) -> int | None:
    """A request's ``parameters.timeout`` in microseconds (Triton's convention), if given."""
    timeout = (parameters or {}).get("timeout") if isinstance(parameters, dict) else None
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidInputError(f"parameters.timeout must be microseconds (an int >= 0), got "
                                f"{timeout!r}")
    return timeout
