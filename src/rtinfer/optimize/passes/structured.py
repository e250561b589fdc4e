"""Structured pruning through torch-pruning's dependency graph, with an iterative schedule.

Each of ``Prune.steps`` steps removes the same share of each group's channels (torch-pruning's
linear schedule: 50% in 2 steps = 25%, then 50% of the original widths), then fine-tunes on the
training labels and the original's soft targets (``Prune.teacher_weight``). A group is a set of
coupled channels: in a ResNet block, the output channels of the block's second conv, its
shortcut and every layer reading the sum; removing one channel removes it from all of them, so
the network stays valid and the export really shrinks.

Ranking (``Prune.method``): ``magnitude`` sums each channel's weight L2 norm over the group;
``activation`` runs the calibration split and, at each layer that *reads* the channel, takes
the mean |input| (``statistic="mean_abs"``) or the share of inputs that are non-zero
(``statistic="zeros"``: after a ReLU, a channel that is zero on 90% of samples scores 0.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtinfer._deps import require
from rtinfer._progress import Progress
from rtinfer.optimize import _torch_job as job
from rtinfer.optimize import training

__all__ = ["activation_statistics", "prune_structured"]


def prune_structured(task: job.TorchTask, config: Any, *, module: Any = None,
                     progress: Progress) -> dict[str, Any]:
    """Prune ``module`` (default ``task.module``) in place following ``config`` (a structured
    :class:`Prune`), fine-tuning it on the task's training split between steps."""
    tp = require("torch_pruning", "Structured pruning")
    torch = require("torch", "Structured pruning")
    module = (task.module if module is None else module).eval()
    calib_inputs, _ = task.split("calibration" if "calibration" in task.splits else "train")
    example = job.to_tensors({k: v[:2] for k, v in calib_inputs.items()})
    with torch.no_grad():
        out = module(**example)
    widths = {int(t.shape[-1]) for t in (out.values() if isinstance(out, Mapping) else [out])}
    attention = _attention_modules(module)
    qkv = {lin for att in attention for lin in (att.query, att.key, att.value)}
    ignored = [m for m in module.modules()
               if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
               and _out_width(m) in widths and not (config.heads and m in qkv)]
    if config.method == "activation":
        importance = _activation_importance(tp, torch, config.statistic)
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.BasePruner(
        module, example_inputs=example, importance=importance,
        global_pruning=config.scope == "global", pruning_ratio=config.amount,
        max_pruning_ratio=0.9, iterative_steps=config.steps, ignored_layers=ignored,
        round_to=config.round_to,
        num_heads={lin: att.num_attention_heads for att in attention
                   for lin in (att.query, att.key, att.value)},
        prune_num_heads=config.heads, prune_head_dims=False,
        head_pruning_ratio=config.amount if config.heads else 0.0,
    )
    before = job.count_parameters(module)
    steps = []
    budget = config.max_seconds
    for step in range(config.steps):
        if config.method == "activation":
            importance.stats = activation_statistics(task, module, config.statistic)
        pruner.step()
        _sync_heads(attention)
        row: dict[str, Any] = {"step": step + 1, "parameters": job.count_parameters(module),
                               "widths": _widths(module)}
        if attention:
            row["heads"] = [att.num_attention_heads for att in attention]
        progress(f"pruning step {step + 1}/{config.steps}: {row['parameters']:,} parameters "
                 f"left of {before:,}")
        if config.finetune_steps:
            # A replay trains to the recorded steps, whatever the clock says.
            stop = None if config.stopped_at is None else config.stopped_at[step]
            share = None if budget is None or stop is not None else budget / config.steps
            teach = attention or config.teacher_weight > 0
            row["finetune"] = training.fit(
                task, module, teacher=job.keep_original(task) if teach else None,
                steps=config.finetune_steps, lr=config.lr, batch_size=config.batch_size,
                max_seconds=share, seed=config.seed + step, stop_at=stop,
                what=f"fine-tuning after step {step + 1}", progress=progress,
                alpha=config.teacher_weight, temperature=config.temperature,
                embedding_weight=1.0 if attention else 0.0)
        steps.append(row)
    return {"parameters_before": before, "parameters_after": job.count_parameters(module),
            "ignored_layers": len(ignored), "steps": steps}


def activation_statistics(task: job.TorchTask, module: Any, statistic: str,
                          max_samples: int = 256) -> dict[Any, Any]:
    """Per Conv/Linear layer, a per-input-channel score over the calibration split."""
    torch = require("torch", "Activation statistics")
    inputs, _ = task.split("calibration" if "calibration" in task.splits else "train")
    sums: dict[Any, Any] = {}
    counts: dict[Any, int] = {}

    def hook(layer: Any, args: tuple[Any, ...], _out: Any) -> None:
        x = args[0].detach()
        # (B, C, H, W) -> (C, B·H·W); (..., C) -> (C, rest)
        flat = x.transpose(0, 1).flatten(1) if x.dim() == 4 else x.reshape(-1, x.shape[-1]).T
        value = flat.abs() if statistic == "mean_abs" else (flat != 0).to(flat.dtype)
        sums[layer] = sums.get(layer, 0) + value.sum(1)
        counts[layer] = counts.get(layer, 0) + flat.shape[1]

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    try:
        n = min(max_samples, len(next(iter(inputs.values()))))
        module.eval()
        with torch.no_grad():
            for lo in range(0, n, 64):
                module(**job.to_tensors({k: v[lo:min(lo + 64, n)] for k, v in inputs.items()}))
    finally:
        for h in hooks:
            h.remove()
    return {layer: sums[layer] / counts[layer] for layer in sums}


def _activation_importance(tp: Any, torch: Any, statistic: str) -> Any:
    fn = tp.pruner.function
    reads = (fn.prune_conv_in_channels, fn.prune_linear_in_channels)

    class ActivationStatistics(tp.importance.GroupMagnitudeImportance):
        """A group's channel score: the mean of its readers' input statistics."""

        def __init__(self) -> None:
            super().__init__()
            self.stats: dict[Any, Any] = {}

        @torch.no_grad()
        def __call__(self, group: Any) -> Any:
            imps, roots = [], []
            for i, (dep, idxs) in enumerate(group):
                layer = dep.target.module
                if dep.handler in reads and layer in self.stats:
                    stat = self.stats[layer]
                    if max(idxs) < len(stat):  # after a flatten the indices are spatial
                        imps.append(stat[list(idxs)])
                        roots.append(group[i].root_idxs)
            if not imps:
                return None
            return self._normalize(self._reduce(imps, roots), self.normalizer)

    return ActivationStatistics()


def _attention_modules(module: Any) -> list[Any]:
    """Self-attention blocks with query/key/value projections (BERT / MiniLM style)."""
    return [m for m in module.modules()
            if all(hasattr(m, a) for a in ("query", "key", "value", "num_attention_heads"))]


def _sync_heads(attention: list[Any]) -> None:
    for att in attention:  # the module's own bookkeeping, after heads were removed
        att.num_attention_heads = att.query.out_features // att.attention_head_size
        att.all_head_size = att.query.out_features


def _out_width(m: Any) -> int:
    return int(m.out_features if hasattr(m, "out_features") else m.out_channels)


def _widths(module: Any) -> dict[str, int]:
    torch = require("torch", "Structured pruning")
    return {n: _out_width(m) for n, m in module.named_modules()
            if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}
