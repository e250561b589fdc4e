"""PyTorch eager: runs the original nn.Module (not a conversion), the baseline to beat."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer.engines.base import Engine, runtime_message
from rtinfer.errors import EngineError, EngineUnavailableError
from rtinfer.models.imported import ImportedModel

__all__ = ["TorchEngine"]


class TorchEngine(Engine):
    """Options: ``device`` (default ``"cpu"``).

    torch's intra-op thread count is process-wide, so the budget is (re)applied before every
    call: two torch sessions with different budgets in one process each run with their own.
    """

    name = "torch"

    def __init__(self, model: ImportedModel, threads: int, **options: Any) -> None:
        super().__init__(model, threads, **options)
        self._torch = require("torch", "The torch engine")
        module = model.load_torch()
        if module is None:
            raise EngineUnavailableError(
                f"the torch engine runs PyTorch models, and {model.source.description} has no "
                "PyTorch source; load it with engine='onnxruntime' or 'openvino', or pass the "
                "nn.Module (or transformers folder) itself"
            )
        self._device = self._torch.device(options.get("device", "cpu"))
        current = next((p.device for p in module.parameters()), self._torch.device("cpu"))
        # .to() moves a module in place; other sessions may share it, so move a copy.
        self._module = (module if current == self._device
                        else copy.deepcopy(module).to(self._device)).eval()
        self._torch.set_num_threads(threads)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        # A read-only array (a request body read in place) is copied: a module may write
        # into its inputs, and torch cannot share memory it may not write.
        tensors = {k: torch.from_numpy(v if v.flags.writeable else v.copy()).to(self._device)
                   for k, v in feeds.items()}
        try:
            with torch.inference_mode():
                out = (self._module(**tensors) if self.model.torch_kwargs
                       else self._module(*tensors.values()))
        except Exception as exc:
            raise EngineError(f"torch failed to run the model: {runtime_message(exc)}") from exc
        arrays = _flatten(torch, out)
        names = self.model.spec.output_names
        if len(arrays) != len(names):
            raise EngineError(
                f"the torch module returned {len(arrays)} tensors but the model's spec has "
                f"{len(names)} outputs {names}"
            )
        return dict(zip(names, arrays, strict=True))

    def effective_threads(self) -> int:
        return int(self._torch.get_num_threads())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self._device)}


def _flatten(torch: Any, out: Any) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, Mapping):
        return [a for v in out.values() for a in _flatten(torch, v)]
    if isinstance(out, (tuple, list)):
        return [a for v in out for a in _flatten(torch, v)]
    raise EngineError(f"the torch module returned a {type(out).__name__}, not tensors")
