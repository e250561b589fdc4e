"""What machine a number was measured on: CPU model and ISA flags, usable cores, GPUs, versions.

Every measurement rtinfer writes carries :func:`environment` so that two figures are only ever
compared when they come from the same machine and library versions.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
from contextlib import suppress
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "cpu_info", "environment", "estimate_peak_flops", "gpu_names",
           "library_versions", "usable_cores"]

# ISA features that change which engine or precision is fastest.
_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                      "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve")

_LIBRARIES = ("rtinfer", "numpy", "onnx", "onnxruntime", "openvino", "torch", "transformers",
              "scikit-learn", "xgboost", "skl2onnx", "onnxmltools")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    logical_cores: int
    usable_cores: int
    flags: tuple[str, ...]
    base_ghz: float | None

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def cpu_info() -> CpuInfo:
    text = ""
    with suppress(OSError):  # not Linux: fall back to platform's answers
        text = Path("/proc/cpuinfo").read_text()
    model = _field(text, "model name") or platform.processor() or platform.machine()
    flags = set((_field(text, "flags") or _field(text, "Features") or "").split())
    ghz = None
    if m := re.search(r"@\s*([\d.]+)\s*GHz", model):
        ghz = float(m.group(1))
    elif mhz := _field(text, "cpu MHz"):
        ghz = round(float(mhz) / 1000, 2)
    return CpuInfo(
        model=model.strip(),
        arch=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable_cores(),
        flags=tuple(f for f in _FLAGS_OF_INTEREST if f in flags),
        base_ghz=ghz,
    )


def usable_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def estimate_peak_flops(info: CpuInfo | None = None, cores: int | None = None) -> tuple[float, str]:
    """fp32 FLOP/s the cores could reach, and how that was worked out.

    FLOP per cycle per core, assuming two FMA units (each FMA is 2 FLOP): AVX-512 16 lanes
    -> 64, AVX2 8 lanes -> 32, otherwise 4-lane SIMD -> 16. A 2-core 2.5 GHz AVX-512 machine:
    2 x 2.5e9 x 64 = 320 GFLOP/s. Parts with one FMA unit reach half; pass a measured peak to
    the benchmark where that matters.
    """
    info = info or cpu_info()
    cores = cores or info.usable_cores
    if info.has("avx512f"):
        per_cycle, isa = 64, "AVX-512"
    elif info.has("avx2") and info.has("fma"):
        per_cycle, isa = 32, "AVX2+FMA"
    else:
        per_cycle, isa = 16, "128-bit SIMD"
    ghz = info.base_ghz or 2.0
    peak = cores * ghz * 1e9 * per_cycle
    how = (f"estimated: {cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa}, two FMA "
           f"units assumed){'' if info.base_ghz else ', clock unknown so 2.0 GHz assumed'}")
    return peak, how


@cache
def gpu_names() -> tuple[str, ...]:
    """NVIDIA GPUs that ``nvidia-smi`` reports; empty when there is none or no driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.split(" (UUID")[0] for line in out.splitlines() if line.startswith("GPU"))


def library_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "xgboost":  # the CPU-only wheel has its own distribution name
                with suppress(metadata.PackageNotFoundError):
                    versions[name] = metadata.version("xgboost-cpu")
    return versions


def environment() -> dict[str, Any]:
    """The provenance block of every result: CPU, cores, memory, GPUs, OS and versions."""
    import psutil

    return {
        "cpu": cpu_info().to_dict(),
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": list(gpu_names()),
        "os": f"{platform.system()} {platform.release()}",
        "versions": library_versions(),
    }


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.MULTILINE)
    return m.group(1) if m else None
