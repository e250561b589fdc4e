"""GPU-machine check: rtinfer sees the GPU, and the torch engine runs on CUDA with the same
outputs as on the CPU; ONNX Runtime reports which execution providers its build has.

    PYTHONPATH=src python benchmarks/device_check.py

Prints one JSON object. Latency ratios (CPU p50 / CUDA p50) are measured in this run.
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import torch

import rtinfer
from rtinfer.bench.inprocess import measure_batch
from rtinfer.hardware import environment, gpu_names


def main() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10),
    ).eval()
    out: dict[str, object] = {"gpus": list(gpu_names()), "cuda": torch.cuda.is_available()}
    import onnxruntime as ort

    out["ort_providers"] = ort.get_available_providers()
    with tempfile.TemporaryDirectory() as tmp:
        model = rtinfer.import_model(net, (torch.randn(2, 3, 64, 64),), input_names=["image"],
                                     out_dir=tmp)
        x = {"image": np.random.default_rng(0).standard_normal((32, 3, 64, 64),
                                                              dtype=np.float32)}
        cpu = rtinfer.load(model, "torch", threads=4)
        gpu = rtinfer.load(model, "torch", threads=4, device="cuda")
        ortc = rtinfer.load(model, "onnxruntime", threads=4)
        out["engine_devices"] = {"torch-cpu": cpu.describe(), "torch-cuda": gpu.describe(),
                                 "onnxruntime": ortc.describe()}
        a, b = cpu.run(x)["output"], gpu.run(x)["output"]
        out["max_abs_diff_cuda_vs_cpu"] = float(np.abs(a - b).max())
        rows = {name: measure_batch(s, x, window_s=0.5, peak_flops=1e12)[0]["latency_ms"]
                for name, s in (("torch-cpu", cpu), ("torch-cuda", gpu), ("onnxruntime", ortc))}
        out["p50_ms"] = {k: v["p50"] for k, v in rows.items()}
        out["cuda_speedup_vs_torch_cpu"] = rows["torch-cpu"]["p50"] / rows["torch-cuda"]["p50"]
    advice_env = environment()
    out["cpu"] = advice_env["cpu"]["model"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
