"""Dynamic batching, with the knobs Triton users know.

    batcher = Batcher(session, BatchingConfig(max_batch_size=8, max_queue_delay_us=2000))
    outputs = await batcher.submit(feeds)          # feeds already validated, any batch size

Requests wait in a queue; one worker takes the oldest request and gathers more until the batch
holds ``max_batch_size`` rows, reaches a ``preferred_batch_size``, or the oldest request has
waited ``max_queue_delay_us``. Only requests whose inputs agree on every non-batch dimension
join one batch, so no request is padded by another — except with ``length_buckets``: then a
2-D (text) input of length L is zero-padded to the smallest bucket >= L, and requests of one
bucket share batches (pad only to the bucket, not to the longest request or the maximum). That
suits models whose padding is masked (attention mask) and whose outputs have no length axis.
With several sessions (instances), as many batches run at once, one per session. A batch runs
once; its outputs are split back row for row, in order, to each request. A full queue
(``max_queue_size``) rejects at once — the HTTP layer answers 503 with ``Retry-After`` — and
a request that waited past its timeout fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtinfer._buckets import bucket_for, pad_sequence
from rtinfer.deploy.settings import BatchingConfig
from rtinfer.engines import Session
from rtinfer.errors import (
    InvalidInputError,
    ModelUnavailableError,
    QueueFullError,
    QueueTimeoutError,
)

_LOG = logging.getLogger("rtinfer.serve")

__all__ = ["Batcher", "pad_to_bucket"]

#: Called after each batch: rows in it, each request's seconds in the queue, seconds computing.
BatchObserver = Callable[[int, list[float], float], None]


# A model whose batches take less than this runs on the event loop itself: handing a call to a
# worker thread and back costs about 50-100 us in CPython, more than such a model computes.
INLINE_BELOW_S = 100e-6


@dataclass(eq=False)  # compared by identity: equality would compare the arrays
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.monotonic)
    deadline: float | None = None


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    rows: int = 0
    rejected: int = 0
    timed_out: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class Batcher:
    """One model version's queue and its workers, one per session (started on first use)."""

    def __init__(self, sessions: Session | list[Session], config: BatchingConfig,
                 observer: BatchObserver | None = None) -> None:
        self.sessions = sessions if isinstance(sessions, list) else [sessions]
        self.session = self.sessions[0]
        self.config = config
        self.observer = observer
        self.stats = BatchStats()
        self.executing = 0  # requests inside a running batch
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._gathering: asyncio.Lock | None = None
        self._free: asyncio.Queue[Session] | None = None  # sessions not running a batch
        self._compute_s: float | None = None  # moving average of one batch's engine time
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests queued or running."""
        return len(self._queue) + self.executing

    def start(self) -> None:
        self._wake, self._idle, self._gathering = asyncio.Event(), asyncio.Event(), asyncio.Lock()
        self._free = asyncio.Queue()
        for session in self.sessions:
            self._free.put_nowait(session)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()) for _ in self.sessions]

    async def stop(self) -> None:
        """Stop at once: queued requests fail with :class:`ModelUnavailableError`."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(ModelUnavailableError("the model was unloaded"))

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Let every queued and running request finish (up to ``timeout_s``), then stop."""
        deadline = time.monotonic() + timeout_s
        while self.pending and self._idle is not None and time.monotonic() < deadline:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
        await self.stop()

    def admit(self) -> None:
        """Raise :class:`QueueFullError` now if the queue is full: front ends call this
        before they decode a request, so that an overloaded server does not spend its CPU
        parsing requests it will refuse (measured: a 2,048-float JSON body costs more to
        decode than the 3 ms model it feeds, and at 4x overload the admitted requests' p99
        was 10x the queue's bound while the loop decoded rejections). :meth:`submit`
        checks again."""
        if len(self._queue) >= self.config.max_queue_size:
            self.stats.rejected += 1
            raise QueueFullError(f"queue full ({self.config.max_queue_size} requests)")

    async def submit(self, feeds: dict[str, np.ndarray],
                     timeout_us: int | None = None) -> dict[str, np.ndarray]:
        """Queue validated ``feeds``; their rows of the batch's outputs when it has run."""
        if self._closed:
            raise ModelUnavailableError("the model was unloaded")
        if self._wake is None:
            self.start()
        assert self._wake is not None  # set by start(); for the type checker
        self.admit()
        if self.config.length_buckets:
            feeds = pad_to_bucket(feeds, self.config.length_buckets)
        rows = len(next(iter(feeds.values())))
        self.stats.requests += 1
        assert self._free is not None
        if not self._queue and not self.config.max_queue_delay_us and not self._free.empty():
            # Nothing to wait for and an idle session: run now, without the worker hand-off
            # (the same batch of one the worker would form, minus two event-loop hops).
            return await self._run_alone(self._free.get_nowait(), feeds, rows)
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        timeout = timeout_us if timeout_us is not None else self.config.default_timeout_us
        item = _Pending(feeds, rows, key, asyncio.get_running_loop().create_future())
        if timeout:
            item.deadline = item.enqueued + timeout / 1e6
        self._queue.append(item)
        self._wake.set()
        return await item.future

    async def _run(self) -> None:
        assert self._wake is not None and self._gathering is not None and self._free is not None
        while True:
            async with self._gathering:  # one worker gathers at a time; others run batches
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                # Wait for a session before gathering: requests arriving meanwhile join in.
                session = await self._free.get()
                try:
                    batch = await self._gather()
                except Exception as exc:  # a bug here must not strand later requests
                    _LOG.exception("batching failed; the queued requests fail with it")
                    self._free.put_nowait(session)
                    while self._queue:
                        p = self._queue.popleft()
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                self.executing += len(batch)
            if batch:
                await self._execute(session, batch)
            else:
                self._free.put_nowait(session)
                if not self.pending and self._idle is not None:
                    self._idle.set()  # every queued request timed out

    async def _gather(self) -> list[_Pending]:
        """Oldest request first; wait up to the delay for compatible others to join."""
        cfg = self.config
        head = self._queue[0]
        deadline = head.enqueued + cfg.max_queue_delay_us / 1e6
        if head.deadline is not None:  # a request's own timeout cuts the wait short
            deadline = min(deadline, head.deadline)
        while True:
            rows = sum(p.rows for p in self._queue if p.key == head.key)
            full = rows >= cfg.max_batch_size or rows in cfg.preferred_batch_size
            now = time.monotonic()
            if full or now >= deadline:
                break
            assert self._wake is not None
            self._wake.clear()
            # A timer is no proof that the deadline passed: uvloop's fire up to a millisecond
            # early (libuv counts whole milliseconds), and a request whose own timeout has not
            # yet run out would then be executed instead of failed. The loop looks again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=deadline - now)
        batch: list[_Pending] = []
        kept: deque[_Pending] = deque()
        taken = 0
        now = time.monotonic()
        for p in self._queue:  # one pass: taken, timed out, or kept in order
            if taken >= cfg.max_batch_size:
                kept.append(p)
            elif p.deadline is not None and now >= p.deadline:
                self.stats.timed_out += 1
                p.future.set_exception(QueueTimeoutError(
                    f"request timed out after {1e3 * (now - p.enqueued):.0f} ms in the queue"))
            elif p.key != head.key or (taken and taken + p.rows > cfg.max_batch_size):
                kept.append(p)
            else:
                batch.append(p)
                taken += p.rows
        self._queue = kept
        return batch

    async def _call(self, session: Session, feeds: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
        def timed() -> dict[str, np.ndarray]:
            start = time.perf_counter()
            outputs = session.run_validated(feeds)
            took = time.perf_counter() - start
            self._compute_s = took if self._compute_s is None else (
                0.8 * self._compute_s + 0.2 * took)
            return outputs

        if self._compute_s is not None and self._compute_s < INLINE_BELOW_S:
            return timed()  # cheaper than the hand-off to a worker thread and back
        return await asyncio.to_thread(timed)

    async def _run_alone(self, session: Session, feeds: dict[str, np.ndarray], rows: int
                         ) -> dict[str, np.ndarray]:
        """A batch of one request that never queued: what :meth:`_execute` does for it,
        without a future to resolve."""
        self.executing += 1
        started = time.monotonic()
        try:
            outputs = await self._call(session, feeds)
        finally:
            self._release(session, 1)
        self._count(rows, [0.0], time.monotonic() - started)
        return outputs

    def _release(self, session: Session, requests: int) -> None:
        """A batch of ``requests`` has left ``session``: it is free, and the batcher idle
        when nothing else is queued or running."""
        assert self._free is not None
        self._free.put_nowait(session)
        self.executing -= requests
        if self._idle is not None and not self.pending:
            self._idle.set()

    def _count(self, rows: int, waits: list[float], took: float) -> None:
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.batch_sizes[rows] = self.stats.batch_sizes.get(rows, 0) + 1
        if self.observer is not None:
            self.observer(rows, waits, took)

    async def _execute(self, session: Session, batch: list[_Pending]) -> None:
        started = time.monotonic()
        parts: list[dict[str, np.ndarray] | Exception]
        try:
            if len(batch) == 1:  # nothing to concatenate or split: no copies at batch 1
                outputs = await self._call(session, batch[0].feeds)
                parts = [outputs]
            else:
                feeds = {k: np.concatenate([p.feeds[k] for p in batch]) for k in batch[0].feeds}
                outputs = await self._call(session, feeds)
                parts, start = [], 0
                for p in batch:  # split in order: request i gets rows [start, start + rows_i)
                    parts.append({k: v[start:start + p.rows] for k, v in outputs.items()})
                    start += p.rows
        except InvalidInputError as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # Valid-looking values the graph rejected (a token id past the vocabulary): one
            # client's mistake must not fail the others it was batched with, so each request
            # runs again alone and only the guilty one fails.
            parts = []
            for p in batch:
                try:
                    parts.append(await self._call(session, p.feeds))
                except Exception as alone:
                    parts.append(alone)
        except Exception as exc:  # the engine failed: every request of the batch learns why
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._release(session, len(batch))
        self._count(sum(p.rows for p in batch), [started - p.enqueued for p in batch],
                    time.monotonic() - started)
        for p, part in zip(batch, parts, strict=True):
            if p.future.done():
                continue
            if isinstance(part, Exception):
                p.future.set_exception(part)
            else:
                p.future.set_result(part)


def pad_to_bucket(feeds: dict[str, np.ndarray], buckets: tuple[int, ...]
                  ) -> dict[str, np.ndarray]:
    """Zero-pad axis 1 of every 2-D input to the smallest bucket >= its length (``buckets``
    ascending, as ``BatchingConfig`` keeps them).

    ``{"input_ids": (1, 11)}`` with buckets (16, 32) becomes (1, 16); a length over the largest
    bucket is left as it is (it batches with requests of exactly its length).
    """
    lengths = {v.shape[1] for v in feeds.values() if v.ndim == 2}
    if len(lengths) != 1:
        return feeds
    (length,) = lengths
    bucket = bucket_for(length, buckets)
    return feeds if bucket == length else pad_sequence(feeds, bucket)
