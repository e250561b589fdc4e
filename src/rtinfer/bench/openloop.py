"""The server scenario: Poisson arrivals at the offered rate, drawn as they come, issued to
``target.concurrency`` workers; a run the target cannot keep up with still ends on time.

    run = run_open_loop(target, samples, qps=200_000, duration_s=15, bound_s=0.010)
    run.scheduled, run.completed, run.not_issued     # e.g. 3_000_412, 81_204, 2_919_196
    run.achieved_qps                                  # 5_380.2: the capacity at this load

What a user of MLPerf LoadGen's server scenario or of Triton's ``perf_analyzer
--request-rate-range`` expects, without their cost under overload:

- Open loop: arrival ``k`` is due at ``t_k`` whatever happened to the others, and its latency
  counts from ``t_k``; a query that waits for a free worker carries that wait (no coordinated
  omission).
- Lazy: gaps and sample indices are drawn ``CHUNK`` at a time, so memory does not grow with
  ``qps x duration``. LoadGen builds its whole schedule before the first query (~460 bytes a
  query, measured: 3 M queries, 1.4 GB, for 200,000 QPS x 15 s) and issues every query of it
  however late, so a run far past capacity lasted ``qps x duration / capacity``.
- No client queue: a free worker takes the next arrival (sleeping until it is due); arrivals
  already due while every worker is busy wait in the schedule itself, which is a counter, not
  a buffer.
- Bounded end: issuing stops ``bound_s`` after the duration (an arrival still waiting then
  has missed the latency bound already, so waiting longer could not change the verdict);
  arrivals scheduled within the duration that no worker reached are counted as not issued;
  calls in flight then get ``DRAIN_S`` to finish, and any still running are counted as
  unfinished.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rtinfer.bench.samples import Samples
from rtinfer.bench.targets import Target

__all__ = ["CHUNK", "DRAIN_S", "OpenLoopRun", "PoissonSchedule", "early_stopping_met",
           "run_open_loop"]

CHUNK = 4096    # arrivals drawn at once: 64 kB of gaps and indices, whatever the rate
DRAIN_S = 10.0  # calls in flight at the end get this long; an HTTP target's timeout is 30 s


class PoissonSchedule:
    """Arrival times (s from the start) of a Poisson process at ``qps`` and a uniformly drawn
    sample index for each, seeded, drawn ``CHUNK`` at a time. Not thread-safe.

        s = PoissonSchedule(qps=1000, n_samples=64)
        s.peek()              # (0.00093, 17): due 0.93 ms after the start, sample 17
        s.pop(); s.taken      # 1
        s.count_before(15.0)  # ~15,000: taken plus those still to come before 15 s
    """

    def __init__(self, qps: float, n_samples: int, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._gap, self._n = 1.0 / qps, n_samples
        self._times = np.zeros(0)
        self._indices = np.zeros(0, np.int64)
        self._i, self._last = 0, 0.0
        self.taken = 0

    def _refill(self) -> None:
        self._times = self._last + np.cumsum(self._rng.exponential(self._gap, CHUNK))
        self._indices = self._rng.integers(0, self._n, CHUNK)
        self._last, self._i = float(self._times[-1]), 0

    def peek(self) -> tuple[float, int]:
        """The next arrival not taken yet: (due time in s, sample index)."""
        if self._i == self._times.size:
            self._refill()
        return float(self._times[self._i]), int(self._indices[self._i])

    def pop(self) -> None:
        self.peek()
        self._i += 1
        self.taken += 1

    def time_of(self, k: int) -> float:
        """When arrival ``k`` (1-based) is due, on a fresh schedule (it walks the chunks
        without keeping them; use a new one of the same seed to run)."""
        left = k
        while left > self._times.size - self._i:
            left -= self._times.size - self._i
            self._i = self._times.size
            self.peek()
        self.peek()
        return float(self._times[self._i + left - 1]) if left > 0 else 0.0

    def count_before(self, end_s: float) -> int:
        """Arrivals taken plus those still to come before ``end_s``, drawn chunk by chunk and
        dropped: how many the schedule holds within ``[0, end_s)`` once nothing more is
        taken (arrivals come in order, so every taken one is before the first untaken)."""
        n = self.taken
        while True:
            self.peek()
            rest = self._times[self._i:]
            below = int(np.searchsorted(rest, end_s))
            n += below
            if below < rest.size:
                return n
            self._i = self._times.size


@dataclass
class OpenLoopRun:
    """What one open-loop run measured; arrays hold answered queries only (a failed request
    is an error, not an answer: its quick failure must not pass for capacity), in seconds."""

    qps: float
    duration_s: float
    scheduled: int                # arrivals within [0, duration)
    issued: int                   # of those, sent to the target
    late: int                     # of those, sent more than the latency bound after due
    latencies: np.ndarray         # (completed,) scheduled time -> answer
    queue_waits: np.ndarray       # (completed,) due -> a worker was free to send it
    issue_delays: np.ndarray      # (completed,) the client's own lateness: a free worker
                                  # woke after the due time (GIL, a busy machine)
    span_s: float                 # the schedule's start -> the last completion
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return int(self.latencies.size)

    @property
    def not_issued(self) -> int:
        return self.scheduled - self.issued

    @property
    def unfinished(self) -> int:
        """Issued but neither answered nor failed before the drain ended."""
        return self.issued - self.completed - self.errors

    @property
    def unserved(self) -> int:
        """Scheduled queries never answered: not issued, unanswered or failed."""
        return self.not_issued + self.unfinished + self.errors

    @property
    def achieved_qps(self) -> float:
        """Answered queries per second over the run: the target's capacity when it was
        offered more than it could carry (failures left out)."""
        return self.completed / self.span_s if self.span_s > 0 else 0.0


class _Workers:
    """``target.concurrency`` threads sharing one schedule; each result recorded under a lock
    until the run is closed, so a call that outlives the drain changes nothing."""

    def __init__(self, target: Target, samples: Samples, schedule: PoissonSchedule,
                 duration_s: float, bound_s: float) -> None:
        self.target, self.samples, self.schedule = target, samples, schedule
        self.duration_s, self.bound_s = duration_s, bound_s
        self.lock = threading.Lock()
        self.closed = False
        self.issued = self.late = self.errors = 0
        self.examples: list[str] = []
        self.latencies, self.waits, self.delays = array("d"), array("d"), array("d")
        self.last_done = 0.0
        self.t0 = self.stop = 0.0

    def take(self) -> tuple[float, int] | None:
        """The next arrival within the duration, or None when issuing is over."""
        with self.lock:
            if self.closed:
                return None
            t, index = self.schedule.peek()
            if t >= self.duration_s or time.perf_counter() > self.stop:
                return None
            self.schedule.pop()
            self.issued += 1
            return self.t0 + t, index

    def work(self) -> None:
        while (arrival := self.take()) is not None:
            due, index = arrival
            now = time.perf_counter()
            wait = max(0.0, now - due)
            if due > now:
                time.sleep(due - now)
            sent = time.perf_counter()
            failure = None
            try:
                self.target.run(self.samples.items[index])
            except Exception as exc:  # a failed request is counted, never stops the run
                failure = f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            with self.lock:
                if self.closed:
                    return
                self.late += sent - due > self.bound_s
                if failure is not None:
                    self.errors += 1
                    if len(self.examples) < 5:
                        self.examples.append(failure)
                    continue
                self.latencies.append(done - due)
                self.waits.append(wait)
                self.delays.append(sent - due - wait)
                self.last_done = max(self.last_done, done)


def run_open_loop(target: Target, samples: Samples, *, qps: float, duration_s: float,
                  bound_s: float, min_queries: int = 0, seed: int = 0,
                  on_thread: Callable[[threading.Thread], None] | None = None) -> OpenLoopRun:
    """Offer ``qps`` Poisson arrivals for ``duration_s``, or longer until ``min_queries``
    are scheduled (as LoadGen does); ``bound_s`` is the latency bound (late and the end of
    issuing are judged by it). Lasts at most that duration plus ``bound_s`` plus the drain of
    calls in flight (``DRAIN_S`` at most). ``on_thread`` sees each worker thread once
    started (the resource monitor's attribution)."""
    if min_queries > 0:
        last = PoissonSchedule(qps, len(samples), seed).time_of(min_queries)
        duration_s = max(duration_s, float(np.nextafter(last, np.inf)))
    schedule = PoissonSchedule(qps, len(samples), seed)
    workers = _Workers(target, samples, schedule, duration_s, bound_s)
    threads = [threading.Thread(target=workers.work, daemon=True, name=f"rtinfer-load-{i}")
               for i in range(target.concurrency)]
    workers.t0 = time.perf_counter() + 0.01  # the threads start before the first arrival
    workers.stop = stop = workers.t0 + duration_s + bound_s
    for t in threads:
        t.start()
        if on_thread:
            on_thread(t)
    for t in threads:
        t.join(timeout=max(0.0, stop + DRAIN_S - time.perf_counter()))
    with workers.lock:
        workers.closed = True
        scheduled = schedule.count_before(duration_s)
        return OpenLoopRun(
            qps=qps, duration_s=duration_s, scheduled=scheduled, issued=workers.issued,
            late=workers.late, latencies=np.frombuffer(workers.latencies).copy(),
            queue_waits=np.frombuffer(workers.waits).copy(),
            issue_delays=np.frombuffer(workers.delays).copy(),
            span_s=max(0.0, workers.last_done - workers.t0), errors=workers.errors,
            error_examples=list(workers.examples))


def early_stopping_met(n: int, over: int, percentile: float = 0.99,
                       confidence: float = 0.99) -> bool:
    """MLPerf LoadGen's early-stopping rule for a latency claim at ``percentile``: with
    ``over`` of ``n`` queries above the bound, the claim holds when a target whose queries
    exceed it with probability ``1 - percentile`` would show ``over`` or fewer less often
    than ``1 - confidence``. ``early_stopping_met(662, 1)`` is True (so 662 queries are
    enough with one over), ``early_stopping_met(600, 1)`` False, ``(459, 0)`` True."""
    q = 1.0 - percentile
    if n <= 0 or over >= n or over > q * n:  # more over than expected: never a pass
        return False
    k = np.arange(over + 1, dtype=np.float64)
    # log of C(n, k) q^k (1-q)^(n-k), k = 0..over, built up by the ratio of neighbours
    steps = np.log(n - k[:-1]) - np.log(k[:-1] + 1) + math.log(q) - math.log1p(-q)
    log_pmf = n * math.log1p(-q) + np.concatenate(([0.0], np.cumsum(steps)))
    top = float(log_pmf.max())
    cdf = math.exp(top) * float(np.exp(log_pmf - top).sum())
    return cdf < 1.0 - confidence
