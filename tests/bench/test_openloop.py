"""The server scenario's open loop: a lazy, seeded Poisson schedule, LoadGen's early-stopping
rule, and a run far past capacity that ends on time, bounded in memory, and says INVALID."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from rtinfer.bench.loadgen import LoadSpec, run_loadgen
from rtinfer.bench.openloop import CHUNK, DRAIN_S, PoissonSchedule, early_stopping_met
from rtinfer.bench.samples import load_samples
from rtinfer.bench.targets import InProcessTarget
from rtinfer.models import ImportedModel


def test_the_schedule_is_poisson_at_the_offered_rate_and_seeded() -> None:
    s = PoissonSchedule(qps=1000, n_samples=7, seed=3)
    arrivals = []
    for _ in range(3 * CHUNK + 5):  # across chunk boundaries
        arrivals.append(s.peek())
        s.pop()
    times = np.array([t for t, _ in arrivals])
    gaps = np.diff(times)
    assert np.all(gaps > 0) and s.taken == len(arrivals)
    assert gaps.mean() == pytest.approx(1e-3, rel=0.05)      # 1000 QPS
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    assert {k for _, k in arrivals} == set(range(7))
    again = PoissonSchedule(qps=1000, n_samples=7, seed=3)
    assert again.peek() == arrivals[0]
    assert PoissonSchedule(qps=1000, n_samples=7, seed=4).peek() != arrivals[0]


def test_the_schedule_counts_what_is_left_without_keeping_it() -> None:
    s = PoissonSchedule(qps=100_000, n_samples=1, seed=0)
    for _ in range(10):
        s.pop()
    n = s.count_before(30.0)  # 3 M arrivals, drawn a chunk at a time
    assert n == pytest.approx(3_000_000, abs=4 * np.sqrt(3_000_000))
    # the same count as taking every arrival before 30 s, and time_of agrees with both
    k = PoissonSchedule(qps=100, n_samples=1, seed=1)
    end = PoissonSchedule(qps=100, n_samples=1, seed=1).time_of(2 * CHUNK + 3)
    taken = 0
    while k.peek()[0] <= end:
        k.pop()
        taken += 1
    assert taken == 2 * CHUNK + 3
    assert PoissonSchedule(qps=100, n_samples=1, seed=1).count_before(end) == taken - 1


@pytest.mark.parametrize(("n", "over", "met"), [
    (662, 1, True), (600, 1, False),   # 662: the default minimum, one query over allowed
    (459, 0, True), (458, 0, False),   # none over: 0.99^n < 1%
    (100_000, 900, True), (100_000, 1000, False), (10, 11, False)])
def test_early_stopping_is_loadgens_binomial_rule(n: int, over: int, met: bool) -> None:
    assert early_stopping_met(n, over) is met


@pytest.fixture(scope="module")
def target(chain: ImportedModel):  # type: ignore[no-untyped-def]
    t = InProcessTarget(chain, threads=1)
    yield t
    t.close()


@pytest.mark.timeout(120)  # before the open loop this run took ~10 minutes
def test_far_past_capacity_the_run_ends_on_time_bounded_and_invalid(
        target: InProcessTarget, tmp_path: Path) -> None:
    """200,000 QPS against a ~1 ms model (capacity ~1,000/s): LoadGen would pre-build 400,000
    queries (~180 MB) and serve every one of them, for minutes."""
    samples = load_samples(spec=target.spec)
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    r = run_loadgen(target, samples, LoadSpec("server", qps=200_000, slo_p99_ms=50,
                                              duration_s=2.0), tmp_path)
    wall = time.perf_counter() - start
    sched = r["schedule"]
    assert wall < 2.0 + 0.05 + DRAIN_S  # the duration, the bound, a bounded drain
    assert r["validity"] == "INVALID" and not r["valid"]
    assert sched["scheduled"] == pytest.approx(400_000, rel=0.01)
    assert 0 < sched["achieved_qps"] < 0.1 * sched["offered_qps"]
    assert r["throughput"]["samples_per_s"] == sched["achieved_qps"]
    assert sched["not_issued"] > 0.9 * sched["scheduled"]
    assert sched["issued"] == sched["completed"] == r["latency_ms"]["n"]
    assert 0 < sched["late"] <= sched["issued"] and sched["unfinished"] == 0
    overloaded = r["invalid_reasons"][0]
    assert overloaded.startswith("overloaded: offered 200,000 QPS, achieved ")
    assert f"{sched['not_issued']:,} of {sched['scheduled']:,} scheduled queries not issued" in (
        overloaded)
    assert any(x.startswith("latency bound at p99 not met: p99 ") for x in r["invalid_reasons"])
    # Memory: nothing per scheduled query (a chunk of arrivals at a time); per answered query
    # three floats. The monitor samples RSS every 100 ms during the run.
    assert r["resources"]["target"]["peak_rss_bytes"] - rss_before < 40 * 2**20
    saved = np.load(tmp_path / "server_queries.npz")
    assert saved["latency_s"].size == sched["completed"]


def test_within_capacity_nothing_is_dropped(target: InProcessTarget, tmp_path: Path) -> None:
    r = run_loadgen(target, load_samples(spec=target.spec),
                    LoadSpec("server", qps=100, slo_p99_ms=200, duration_s=0.5,
                             min_queries=100), tmp_path)
    sched = r["schedule"]
    assert sched["not_issued"] == 0 and sched["unfinished"] == 0
    assert sched["scheduled"] == sched["completed"] >= 100  # run past 0.5 s for min_queries
    assert r["load"]["effective_min_duration_ms"] > 500
    assert r["errors"]["count"] == 0 and r["loadgen"] is None
    # the client's own lateness (a free worker waking late) stays apart from queueing
    assert r["issue_delay_ms"]["p99"] < 200 and r["client_queue_wait_ms"]["p99"] is not None


class _FailingAfterWarmUp(InProcessTarget):
    """Answers through the warm-up (its first 0.5 s), then fails every request at once, as a
    server answering 503 under overload."""

    first = 0.0

    def run(self, feeds: Any) -> Any:
        self.first = self.first or time.perf_counter()
        if time.perf_counter() - self.first > 0.55:
            raise RuntimeError("503: queue full")
        return super().run(feeds)


def test_failed_requests_are_not_capacity(chain: ImportedModel, tmp_path: Path) -> None:
    """Quick failures are errors, not answers: no achieved rate, no latency, counted as over
    the bound, and the objective is not met."""
    failing = _FailingAfterWarmUp(chain, threads=1)
    r = run_loadgen(failing, load_samples(spec=failing.spec),
                    LoadSpec("server", qps=500, slo_p99_ms=50, duration_s=0.3), tmp_path)
    failing.close()
    sched = r["schedule"]
    assert sched["failed"] > 0 and sched["unfinished"] == 0
    assert sched["completed"] + sched["failed"] == sched["issued"]
    assert r["latency_ms"]["n"] == sched["completed"]  # failures have no latency
    assert r["validity"] == "INVALID" and not r["meets_objective"]
    assert any("requests failed, e.g. RuntimeError: 503" in x for x in r["invalid_reasons"])
