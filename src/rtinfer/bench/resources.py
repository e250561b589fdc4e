"""CPU and memory beside latency: the target's, and the load generator's own.

    monitor = ResourceMonitor(target_pid=None)   # None: the target runs in this process
    monitor.start(); ...run the test...; usage = monitor.stop()
    usage["client"]["cpu_percent"], usage["target"]["peak_rss_bytes"]

On a 2-core machine the client and the server compete for the same cores, so a load test must
say how much CPU the client took. In this process, threads are attributed by who runs them:
threads marked as the client's (the thread that drives LoadGen, HTTP workers) and threads
that appear during the run (LoadGen's own) count as the client; the threads that existed
before it (engine pools, an in-process server) and threads marked as the target's count as the
target. A separate server process is measured as a whole. CPU % is per core: 100 = one core.
"""

from __future__ import annotations

import resource
import threading
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["ResourceMonitor", "bottleneck_warnings"]


class ResourceMonitor:
    """Samples per-thread CPU times of this process and the target process every ``period_s``."""

    def __init__(self, target_pid: int | None = None, period_s: float = 0.1) -> None:
        self.me = psutil.Process()
        external = target_pid is not None and target_pid != self.me.pid
        self.target = psutil.Process(target_pid) if external and target_pid else None
        self.period_s = period_s
        self.client_tids: set[int] = {threading.get_native_id()}
        self.target_tids: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._before = {t.id for t in self.me.threads()}
        self._base = self._thread_times()
        self._last = dict(self._base)
        self._wall0 = time.perf_counter()
        self._target0 = self.target.cpu_times() if self.target else None
        self._peak_sampled = self._rss()
        self._machine0 = psutil.cpu_times()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rtinfer-monitor")
        self._thread.start()
        self.client_tids.add(self._thread.native_id or 0)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        client = target = 0.0
        for tid, cpu in self._last.items():
            used = cpu - self._base.get(tid, 0.0)
            is_client = tid in self.client_tids or (tid not in self._before
                                                    and tid not in self.target_tids)
            if is_client:
                client += used
            else:
                target += used
        if self.target is not None and self._target0 is not None:
            try:
                t1 = self.target.cpu_times()
                target = (t1.user + t1.system) - (self._target0.user + self._target0.system)
            except psutil.Error:
                target = float("nan")
        machine = psutil.cpu_times()
        busy = _busy(machine) - _busy(self._machine0)
        total = sum(machine) - sum(self._machine0)
        return {
            "wall_s": wall,
            "client": {"cpu_percent": 100 * client / wall,
                       "note": "this process's load-generator threads (LoadGen, request "
                               "workers for HTTP targets, the sampler)"},
            "target": {
                "pid": self.target.pid if self.target else self.me.pid,
                "in_this_process": self.target is None,
                "cpu_percent": 100 * target / wall,
                "peak_rss_bytes": self._peak_sampled,
                "lifetime_peak_rss_bytes": self._lifetime_peak(),
                "peak_rss_note": f"max of RSS sampled every {self.period_s * 1e3:.0f} ms "
                                 "during the run; lifetime peak from the kernel (VmHWM)",
            },
            "machine": {"cores": psutil.cpu_count(),
                        "busy_percent": 100 * busy / total * (psutil.cpu_count() or 1)
                        if total > 0 else None,
                        "note": "all processes on the machine, 100 = one core"},
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def _sample(self) -> None:
        self._last.update(self._thread_times())
        self._peak_sampled = max(self._peak_sampled, self._rss())

    def _thread_times(self) -> dict[int, float]:
        try:
            return {t.id: t.user_time + t.system_time for t in self.me.threads()}
        except psutil.Error:
            return {}

    def _rss(self) -> int:
        try:
            return int((self.target or self.me).memory_info().rss)
        except psutil.Error:
            return 0

    def _lifetime_peak(self) -> int | None:
        if self.target is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        try:
            for line in Path(f"/proc/{self.target.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None


def bottleneck_warnings(usage: dict[str, Any], issue_delay_p99_ms: float | None,
                        objective_ms: float | None) -> list[str]:
    """Plain-language warnings when the load generator, not the target, limits the run."""
    out = []
    client = usage["client"]["cpu_percent"]
    if client >= 80:
        out.append(f"the load generator used {client:.0f}% of a core: a Python client near "
                   "one full core cannot issue faster; the target may be able to do more")
    machine = usage["machine"].get("busy_percent")
    cores = usage["machine"].get("cores") or 1
    if machine is not None and machine >= 90 * cores and client >= 0.3 * machine:
        out.append(f"all {cores} cores were busy ({machine:.0f}%) and the client took "
                   f"{client:.0f}% of that: client and target compete for the CPU")
    limit = 0.1 * objective_ms if objective_ms else 2.0
    if issue_delay_p99_ms is not None and issue_delay_p99_ms > limit:
        out.append(f"the load generator issued queries late (p99 issue delay "
                   f"{issue_delay_p99_ms:.2f} ms > {limit:.2f} ms): the client could not keep "
                   "the schedule (a busy machine or the client itself); latency still counts "
                   "from the schedule")
    return out


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))
