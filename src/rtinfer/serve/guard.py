"""The online accuracy guard: shadow a served version with the original it was judged against.

    guard = Guard(config, served, reference, metrics)     # the repository attaches it
    guard.observe(feeds, outputs)   # after a request was answered: maybe queue it for the shadow
    served = guard.route(served)    # the reference once rolled back, else the version itself

An optimized version passed its budget on held-out data; live inputs can still leave the ranges
it was calibrated on. A sampled share (``sample``) of the answered requests is queued for the
reference version (by default the original the version's manifest names), which runs it later
on its own batcher: the client's answer never waits for it. One sample runs on the reference at
a time and at most ``queue`` wait; a sample that finds the queue full is dropped and counted,
so the shadow's CPU share stays bounded when the machine is busy.

Each row of a sample gets a score against the reference's answer: ``top1_agreement`` (1 when
the compared output's arg-max agrees, else 0) or ``cosine``. The mean over the last ``window``
scores is the guard's score. Once ``min_samples`` scores are in (default: a whole window), a
score below ``threshold`` either raises an ``alert`` (state ``degraded``, one log line without
payloads; it clears at ``threshold + hysteresis``) or rolls back: from then on every request
for the version is answered by the reference (requests already queued on the version finish
there), the reason is recorded, and only :meth:`Guard.reset` (``POST
/v2/repository/models/{name}/guard/reset``) or a new version switches back.

With ``capture``, the inputs of disagreeing rows (top-1 differs, or cosine below the threshold)
are written as ``.npz`` files, one per row, named after the inputs: what ``rtinfer quantize
--calibration-extra FOLDER`` reads. Off by default: live inputs are the users' data.

Each server process (``rtinfer serve --workers``) guards the traffic it answers: its own window,
state and switch; the metrics are merged over the workers like every other metric, and a reset
reaches every worker (:class:`~rtinfer.serve.workers.WorkerControl`).
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rtinfer.deploy.settings import GuardConfig

if TYPE_CHECKING:
    from rtinfer.serve.model import ServedModel

__all__ = ["STATES", "Guard", "GuardObserver", "row_scores"]

_LOG = logging.getLogger("rtinfer.serve")

#: Guard states, and the value ``rtinfer_guard_state`` exports for each.
STATES = {"warming": 0, "ok": 0, "degraded": 1, "rolled_back": 2}


class GuardObserver(Protocol):
    """How the metrics see a guard (:meth:`rtinfer.serve.metrics.ServerMetrics.guard`)."""

    def scored(self, score: float) -> None: ...
    def dropped(self) -> None: ...
    def rolled_back(self) -> None: ...


@dataclass
class _Sample:
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


class Guard:
    """Shadows ``primary`` with ``reference`` as ``config`` says; see the module docstring."""

    def __init__(self, config: GuardConfig, primary: ServedModel, reference: ServedModel,
                 observer: GuardObserver | None = None, capture_dir: Path | None = None,
                 seed: int | None = None) -> None:
        self.config = config
        self.primary = primary
        self.reference = reference
        self.observer = observer
        self.capture_dir = capture_dir
        self.output = config.output or primary.session.spec.outputs[0].name
        mine = {t.name: t for t in primary.session.spec.outputs}
        theirs = {t.name: t for t in reference.session.spec.outputs}
        if self.output not in mine:
            raise ValueError(f"guard: version {primary.version} has no output {self.output!r}")
        if self.output not in theirs or {t.name for t in primary.session.spec.inputs} != \
                {t.name for t in reference.session.spec.inputs}:
            raise ValueError(f"guard: the reference, version {reference.version}, has other "
                             f"inputs or no output {self.output!r}: it cannot judge version "
                             f"{primary.version}")
        shape = mine[self.output].shape
        if config.metric == "top1_agreement" and (len(shape) < 2 or shape[-1] == 1):
            raise ValueError(f"guard: output {self.output!r} has one value per row "
                             f"({list(shape)}): top-1 agreement cannot fail there; use "
                             "metric=cosine or name another output")
        self._random = random.Random(seed)
        self._stopped = False
        self._queue: asyncio.Queue[_Sample] | None = None
        self._task: asyncio.Task[None] | None = None
        self._scores: deque[float] = deque(maxlen=config.window)
        self._sum = 0.0
        self.state = "warming"
        self.reason = ""
        self.since: float | None = None   # when the current state began (time.time())
        self.samples = 0                  # rows scored
        self.dropped = 0                  # samples the full queue turned away
        self.captured = 0
        self.failed = 0                   # samples the reference could not run
        self.rolled_back_after: int | None = None  # rows scored when it last rolled back

    # -- the request path: two cheap calls ----------------------------------------------------

    def route(self, served: ServedModel) -> ServedModel:
        """Who answers a request for the guarded version: the reference once rolled back."""
        return self.reference if self.state == "rolled_back" else served

    def observe(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Maybe queue an answered request for the reference; never waits, never raises."""
        if self._stopped or self.state == "rolled_back" or \
                self._random.random() >= self.config.sample:
            return
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue(self.config.queue)
            self._task = asyncio.get_running_loop().create_task(self._shadow())
        try:
            self._queue.put_nowait(_Sample(feeds, outputs))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.observer is not None:
                self.observer.dropped()

    # -- off the request path -------------------------------------------------------------------

    async def _shadow(self) -> None:
        queue = self._queue
        assert queue is not None
        while not self._stopped:
            sample = await queue.get()
            try:
                expected = await self.reference.batcher.submit(sample.feeds)
                scores = row_scores(sample.outputs[self.output], expected[self.output],
                                    self.config.metric, rows=self.primary.batchable)
                for row, score in enumerate(scores):
                    self._score(float(score))
                    if self.capture_dir is not None and self._disagrees(float(score)):
                        await self._capture(self.capture_dir, sample.feeds, row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reference is unloaded, busy or broken: not scored
                self.failed += 1
                if self.failed in (1, 10) or self.failed % 1000 == 0:  # not one line a sample
                    _LOG.warning("guard of %s version %s: a sample could not be judged against "
                                 "version %s (%d so far): %s", self.primary.name,
                                 self.primary.version, self.reference.version, self.failed,
                                 type(exc).__name__)

    def _score(self, score: float) -> None:
        if len(self._scores) == self._scores.maxlen:
            self._sum -= self._scores[0]
        self._scores.append(score)
        self._sum += score
        self.samples += 1
        if self.observer is not None:
            self.observer.scored(score)
        if len(self._scores) < self.config.verdict_after or self.state == "rolled_back":
            return
        mean = self.score
        assert mean is not None
        if mean < self.config.threshold:
            why = (f"{self.config.metric} {mean:.4f} < {self.config.threshold:g} over the last "
                   f"{len(self._scores)} samples against version {self.reference.version}")
            if self.config.action == "rollback":
                self._enter("rolled_back", f"rolled back to version {self.reference.version}: "
                                           f"{why}")
                self.rolled_back_after = self.samples
                if self.observer is not None:
                    self.observer.rolled_back()
            elif self.state != "degraded":
                self._enter("degraded", why)
        elif self.state == "warming" or (
                self.state == "degraded"
                and mean >= self.config.threshold + self.config.hysteresis):
            self._enter("ok", "")

    def _enter(self, state: str, reason: str) -> None:
        self.state, self.reason, self.since = state, reason, time.time()
        if state in ("degraded", "rolled_back"):
            _LOG.warning("guard of %s version %s: %s", self.primary.name, self.primary.version,
                         reason)
        elif reason == "" and self.samples > self.config.verdict_after:
            _LOG.info("guard of %s version %s: back within %s >= %g", self.primary.name,
                      self.primary.version, self.config.metric, self.config.threshold)

    def _disagrees(self, score: float) -> bool:
        return score < 1.0 if self.config.metric == "top1_agreement" else \
            score < self.config.threshold

    async def _capture(self, folder: Path, feeds: dict[str, np.ndarray], row: int) -> None:
        if self.captured >= self.config.capture_max:
            return
        self.captured += 1
        one = ({k: v[row:row + 1] for k, v in feeds.items()} if self.primary.batchable
               else feeds)  # without a batch axis, the request is the row
        # Unique across worker processes and restarts: the time, the process, a counter.
        name = (f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-"
                f"{self.captured:06d}.npz")
        try:
            await asyncio.to_thread(_write_npz, folder, name, one)
        except (OSError, TypeError, ValueError) as exc:
            self.captured -= 1
            if self.failed == 0:
                _LOG.warning("guard of %s version %s: cannot capture into %s: %s",
                             self.primary.name, self.primary.version, folder,
                             getattr(exc, "strerror", None) or type(exc).__name__)
            self.failed += 1

    # -- control and reporting --------------------------------------------------------------

    @property
    def score(self) -> float | None:
        """The mean score over the window (None before the first sample)."""
        return self._sum / len(self._scores) if self._scores else None

    def reset(self) -> None:
        """Back to the guarded version with an empty window (the explicit switch back)."""
        if self.state == "rolled_back":
            _LOG.warning("guard of %s version %s: reset; traffic is back on version %s",
                         self.primary.name, self.primary.version, self.primary.version)
        self._scores.clear()
        self._sum = 0.0
        self.state, self.reason, self.since = "warming", "", time.time()

    def status(self) -> dict[str, Any]:
        """What the repository index shows for the guarded version."""
        score = self.score
        return {"state": self.state, "reason": self.reason,
                "metric": self.config.metric, "threshold": self.config.threshold,
                "score": None if score is None else round(score, 6),
                "window": len(self._scores), "samples": self.samples, "dropped": self.dropped,
                "failed": self.failed, "captured": self.captured,
                "reference": self.reference.version, "action": self.config.action,
                "serving": (self.reference if self.state == "rolled_back"
                            else self.primary).version,
                "since": self.since, "rolled_back_after": self.rolled_back_after}

    def inherit(self, old: Guard) -> None:
        """Carry ``old``'s verdict and window over (the same version reloaded with the same
        guard settings): a reload is no way back from a rollback."""
        self._scores, self._sum = deque(old._scores, maxlen=self.config.window), old._sum
        self.state, self.reason, self.since = old.state, old.reason, old.since
        for key in ("samples", "dropped", "captured", "failed", "rolled_back_after"):
            setattr(self, key, getattr(old, key))

    def stop(self) -> None:
        """Stop shadowing for good (the version retires or its guard is replaced); queued
        samples are dropped unscored, and later answers are not sampled."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._queue = None


def row_scores(got: np.ndarray, expected: np.ndarray, metric: str,
               rows: bool = True) -> np.ndarray:
    """One score per row of the leading axis (``rows``; else the whole tensor is one row).
    Top-1 takes the arg-max over the last axis (classes); a row with several positions
    (tokens, pixels) scores the share of them that agree."""
    a, b = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if not rows or a.ndim == 0:
        a, b = a.reshape(1, -1), b.reshape(1, -1)
    elif a.ndim == 1:  # one value per row
        a, b = a.reshape(-1, 1), b.reshape(-1, 1)
    if a.shape != b.shape:
        return np.zeros(len(a))  # an answer of another shape agrees nowhere
    if metric == "top1_agreement":
        same = a.argmax(axis=-1) == b.argmax(axis=-1)
        return same.reshape(len(a), -1).mean(axis=1)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    same = np.all(a == b, axis=1)  # two zero vectors (or equal ones) agree
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)
    return np.where(same, 1.0, np.clip(cos, -1.0, 1.0))


def _write_npz(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``name`` into ``folder`` without following a link planted there (the folder's
    own real path was checked when the guard was made)."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink():
        raise OSError(errno.ELOOP, "the capture folder became a link", str(folder))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # whole before the file exists
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(buffer.getvalue())
