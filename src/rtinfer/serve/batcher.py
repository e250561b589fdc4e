"""Dynamic batching, with the knobs Triton users know.

    batcher = Batcher(session, BatchingConfig(max_batch_size=8, max_queue_delay_us=2000))
    outputs = await batcher.submit(feeds)          # feeds already validated, any batch size

Requests wait in a queue; one worker takes the oldest request and gathers more until the batch
holds ``max_batch_size`` rows, reaches a ``preferred_batch_size``, or the oldest request has
waited ``max_queue_delay_us``. Only requests whose inputs agree on every non-batch dimension
join one batch (text padded to different lengths waits for a batch of its own length), so no
request is padded by another. The batch runs once; its outputs are split back row for row, in
order, to each request. A full queue (``max_queue_size``) rejects at once — the HTTP layer
answers 503 with ``Retry-After`` — and a request that waited past its timeout fails alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtinfer.engines import Session

__all__ = ["Batcher", "BatchingConfig", "QueueFullError", "QueueTimeoutError"]


class QueueFullError(Exception):
    """The model's queue is at ``max_queue_size``: retry later."""


class QueueTimeoutError(Exception):
    """The request waited in the queue past its timeout."""


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 8
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 256
    default_timeout_us: int = 0  # 0: no timeout

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0 or self.max_queue_size < 1:
            raise ValueError("max_queue_delay_us must be >= 0 and max_queue_size >= 1")


@dataclass(eq=False)  # identity, not field, equality: deque.remove must never compare arrays
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
    """One model's queue and its batching worker (start it inside the server's event loop)."""

    def __init__(self, session: Session, config: BatchingConfig) -> None:
        self.session = session
        self.config = config
        self.stats = BatchStats()
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def submit(self, feeds: dict[str, np.ndarray],
                     timeout_us: int | None = None) -> dict[str, np.ndarray]:
        if self._wake is None:
            self.start()
        assert self._wake is not None  # set by start(); for the type checker
        if len(self._queue) >= self.config.max_queue_size:
            self.stats.rejected += 1
            raise QueueFullError(f"queue full ({self.config.max_queue_size} requests)")
        rows = len(next(iter(feeds.values())))
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in feeds.items())
        timeout = timeout_us if timeout_us is not None else self.config.default_timeout_us
        item = _Pending(feeds, rows, key, asyncio.get_running_loop().create_future())
        if timeout:
            item.deadline = item.enqueued + timeout / 1e6
        self._queue.append(item)
        self.stats.requests += 1
        self._wake.set()
        return await item.future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = await self._gather()
            if batch:
                await self._execute(batch)

    async def _gather(self) -> list[_Pending]:
        """Oldest request first; wait up to the delay for compatible others to join."""
        cfg = self.config
        head = self._queue[0]
        deadline = head.enqueued + cfg.max_queue_delay_us / 1e6
        while True:
            rows = sum(p.rows for p in self._queue if p.key == head.key)
            full = rows >= cfg.max_batch_size or rows in cfg.preferred_batch_size
            now = time.monotonic()
            if full or now >= deadline:
                break
            assert self._wake is not None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=deadline - now)
            except TimeoutError:
                break
        batch: list[_Pending] = []
        taken = 0
        now = time.monotonic()
        for p in list(self._queue):
            if p.deadline is not None and now > p.deadline:
                self._queue.remove(p)
                self.stats.timed_out += 1
                p.future.set_exception(QueueTimeoutError("request timed out in the queue"))
                continue
            if p.key != head.key or (taken and taken + p.rows > cfg.max_batch_size):
                continue
            self._queue.remove(p)
            batch.append(p)
            taken += p.rows
            if taken >= cfg.max_batch_size:
                break
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        feeds = {k: np.concatenate([p.feeds[k] for p in batch]) for k in batch[0].feeds}
        try:
            outputs = await asyncio.to_thread(self.session.run_validated, feeds)
        except Exception as exc:  # the engine failed: every request of the batch learns why
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        rows = sum(p.rows for p in batch)
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.batch_sizes[rows] = self.stats.batch_sizes.get(rows, 0) + 1
        start = 0
        for p in batch:  # split back in order: request i gets rows [start, start + rows_i)
            part = {k: v[start:start + p.rows] for k, v in outputs.items()}
            start += p.rows
            if not p.future.done():
                p.future.set_result(part)
