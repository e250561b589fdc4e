"""Pruning: zero single weights, or remove whole channels, FFN neurons and attention heads.

    prune_weights(net, Prune(amount=0.5, scope="layer", layers=("Conv2d",)))  # seed's example
    prune_weights(net, Prune(threshold=0.02))          # W' = W where |W| > 0.02, else 0
    result = prune("perception", Prune(structured=True, amount=0.5, steps=3,
                                       finetune_steps=150), out="repo")

**Unstructured** (``structured=False``, magnitude only): ``amount=0.5`` zeroes the half of the
weights with the smallest |W| — over all chosen layers together (``scope="global"``) or in each
layer (``scope="layer"``); ``threshold=τ`` zeroes every |W| <= τ. The masks come from
``torch.nn.utils.prune`` and are made permanent (``prune.remove``) before export, so the weights
are exactly PyTorch's. Dense kernels do the same work on zeros: expect no speedup (measured in
``benchmarks/prune_distill.py``).

**Structured** (``structured=True``): whole output channels of convolutions, FFN neurons and
(``heads=True``) attention heads are removed together with everything that depends on them
(the next layer's inputs, batch norms, residual partners), through the ``torch-pruning``
library's dependency graph, so the exported ONNX is smaller and faster. ``amount=0.5`` removes
half the channels of each group, in ``steps`` equal steps with ``finetune_steps`` optimizer
steps after each (an iterative schedule) on the training labels and, by
``teacher_weight``, on the original model's softened outputs (distillation from the unpruned
network, which keeps its behaviour beyond the training data). Channels are ranked by the
L2 norm of their weights (``method="magnitude"``) or by activation statistics over calibration
data (``method="activation"``: mean |activation| at the next layer's input, or with
``statistic="zeros"`` the share of it that is non-zero after ReLU — the least active go first).
Layers whose output width equals a model output's width (a classifier head, a transformer's
hidden size) keep their width, so the outputs keep their shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rtinfer._deps import require
from rtinfer._progress import Progress

__all__ = ["CONFIG_VERSION", "Prune", "prune", "prune_weights", "sparsity_report"]

CONFIG_VERSION = 3  # 2: ``stopped_at`` (where a time limit cut the fine-tuning short);
# 3: fine-tuning learns from the original's soft targets (``teacher_weight``; older recipes 0)
_METHODS = ("magnitude", "activation")
_SCOPES = ("global", "layer")
_STATISTICS = ("mean_abs", "zeros")
_LAYER_TYPES = ("Conv2d", "Conv1d", "Linear")


@dataclass(frozen=True)
class Prune:
    """One pruning setting; a pass in a recipe (round-trips through :meth:`to_dict`).

    ``Prune()`` zeroes the 50% smallest weights of every Conv2d and Linear, ranked globally.
    """

    method: str = "magnitude"
    amount: float | None = None        # share to remove; 0.5 when neither it nor threshold
    threshold: float | None = None     # unstructured magnitude only: zero |W| <= threshold
    scope: str = "global"
    structured: bool = False
    layers: tuple[str, ...] = ("Conv2d", "Linear")  # unstructured: module types to prune
    statistic: str = "mean_abs"        # activation method: "mean_abs" or "zeros"
    heads: bool = False                # structured transformers: remove whole heads too
    steps: int = 1                     # structured: iterative schedule in this many steps
    finetune_steps: int = 0            # optimizer steps on labels after each step
    # Share of the fine-tuning loss that is the original's softened outputs (KL at
    # ``temperature``; the rest is cross-entropy on the labels). On the perception kit at 50%
    # of the channels, labels alone kept the test top-1 (1.000) but lost 9.7 points on scans
    # shifted and dimmed (0.903 -> 0.805); 0.7 at T=2 kept them (0.908), same steps.
    teacher_weight: float = 0.7
    temperature: float = 2.0
    lr: float = 1e-3
    batch_size: int = 64
    round_to: int = 8                  # keep channel counts multiples of this (SIMD widths)
    max_seconds: float | None = None   # bound on all fine-tuning together
    seed: int = 0
    # Fine-tuning steps reached after each pruning step when ``max_seconds`` cut them short;
    # a replay trains exactly that far. None: every step's fine-tuning ran in full.
    stopped_at: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("method", self.method, _METHODS),
                                     ("scope", self.scope, _SCOPES),
                                     ("statistic", self.statistic, _STATISTICS)):
            if value not in allowed:
                raise ValueError(f"Prune.{name} must be one of {allowed}, got {value!r}")
        if self.amount is not None and self.threshold is not None:
            raise ValueError("give Prune(amount=...) or Prune(threshold=...), not both")
        if self.amount is None and self.threshold is None:
            object.__setattr__(self, "amount", 0.5)
        if self.amount is not None and not 0.0 < self.amount < 1.0:
            raise ValueError(f"Prune.amount is the share removed, strictly between 0 and 1 "
                             f"(0.5 = half); got {self.amount}")
        if self.threshold is not None:
            if self.threshold < 0:
                raise ValueError(f"Prune.threshold must be >= 0, got {self.threshold}")
            if self.structured or self.method != "magnitude":
                raise ValueError("Prune.threshold applies to unstructured magnitude pruning; "
                                 "for channels give amount=... instead")
        if self.method == "activation" and not self.structured:
            raise ValueError("activation statistics rank channels and neurons, not single "
                             "weights: use Prune(method='activation', structured=True)")
        object.__setattr__(self, "layers", tuple(self.layers))
        unknown = [t for t in self.layers if t not in _LAYER_TYPES]
        if unknown or not self.layers:
            raise ValueError(f"Prune.layers must name some of {_LAYER_TYPES}, got "
                             f"{self.layers}")
        for name in ("steps", "batch_size", "round_to"):
            if getattr(self, name) < 1:
                raise ValueError(f"Prune.{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_steps < 0:
            raise ValueError(f"Prune.finetune_steps must be >= 0, got {self.finetune_steps}")
        if not 0.0 <= self.teacher_weight <= 1.0 or self.temperature <= 0:
            raise ValueError(f"Prune.teacher_weight is a share between 0 and 1 and "
                             f"Prune.temperature is positive; got {self.teacher_weight} and "
                             f"{self.temperature}")
        if self.stopped_at is not None:
            done = tuple(int(n) for n in self.stopped_at)
            if len(done) != self.steps or not all(0 <= n <= self.finetune_steps for n in done):
                raise ValueError(f"Prune.stopped_at holds the fine-tuning steps reached after "
                                 f"each of the {self.steps} pruning step(s), each within "
                                 f"{self.finetune_steps}; got {self.stopped_at}")
            object.__setattr__(self, "stopped_at", done)
        if self.finetune_steps and not self.structured:
            raise ValueError("fine-tuning after unstructured pruning would regrow the zeroed "
                             "weights; use finetune_steps=0 (or structured=True)")

    def to_dict(self) -> dict[str, Any]:
        return {"pass": "prune", "version": CONFIG_VERSION, **asdict(self),
                "layers": list(self.layers),
                "stopped_at": None if self.stopped_at is None else list(self.stopped_at)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prune:
        data = dict(data)
        version = data.pop("version", 1)
        if data.pop("pass", "prune") != "prune" or version not in range(1, CONFIG_VERSION + 1):
            raise ValueError(f"not a Prune pass of version 1..{CONFIG_VERSION}: {data}")
        data["layers"] = tuple(data.get("layers", ("Conv2d", "Linear")))
        if version < 3:  # fine-tuned on the labels alone
            data.setdefault("teacher_weight", 0.0)
        if data.get("stopped_at") is not None:
            data["stopped_at"] = tuple(data["stopped_at"])
        return cls(**data)

    def as_run(self, reached: tuple[int, ...]) -> Prune:
        """This setting as its run went, for the recipe: no time limit, and the fine-tuning
        steps ``reached`` after each pruning step when the limit cut them short."""
        planned = (self.finetune_steps,) * self.steps if self.structured else ()
        cut = reached != planned
        return replace(self, max_seconds=None, stopped_at=reached if cut else None)

    def describe(self) -> str:
        what = (f"threshold {self.threshold:g}" if self.threshold is not None
                else f"{self.amount:.0%}")
        if not self.structured:
            return f"unstructured magnitude pruning, {what}, {self.scope} scope"
        rank = "weight L2 norm" if self.method == "magnitude" else f"activation {self.statistic}"
        return (f"structured pruning of {what} of channels by {rank}, {self.scope} scope, "
                f"{self.steps} step(s) with {self.finetune_steps} fine-tuning steps each"
                + (f" ({self.teacher_weight:.0%} from the original's soft targets)"
                   if self.finetune_steps and self.teacher_weight else ""))


def prune_weights(module: Any, config: Prune) -> dict[str, Any]:
    """Unstructured magnitude pruning of ``module`` in place; masks made permanent.

    Returns :func:`sparsity_report` of the pruned layers. For a 3x3 conv with 64 -> 64 channels
    (36,864 weights), ``Prune(amount=0.5, scope="layer")`` zeroes 18,432 of them.
    """
    if config.structured:
        raise ValueError("prune_weights does unstructured pruning; use prune(...) for "
                         "structured=True")
    tprune = require("torch.nn.utils.prune", "Pruning")
    targets = _layers(module, config.layers)
    if not targets:
        raise ValueError(f"the module has no {' or '.join(config.layers)} layers to prune")
    if config.threshold is not None:
        for _, layer in targets:
            tprune.custom_from_mask(layer, "weight", layer.weight.detach().abs() > config.threshold)
    elif config.scope == "layer":
        for _, layer in targets:
            tprune.l1_unstructured(layer, "weight", amount=config.amount)
    else:
        tprune.global_unstructured([(layer, "weight") for _, layer in targets],
                                   pruning_method=tprune.L1Unstructured, amount=config.amount)
    for _, layer in targets:
        tprune.remove(layer, "weight")  # weight_orig * mask becomes the plain weight again
    return sparsity_report(module, config.layers)


def sparsity_report(module: Any, layers: tuple[str, ...] = ("Conv2d", "Linear")
                    ) -> dict[str, Any]:
    """Per layer and in total: weights, zeros, and the share of zeros (sparsity)."""
    rows = []
    for name, layer in _layers(module, layers):
        w = layer.weight.detach()
        zeros = int((w == 0).sum())
        rows.append({"layer": name, "type": type(layer).__name__, "shape": list(w.shape),
                     "weights": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel()})
    total = sum(r["weights"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    return {"layers": rows, "weights": total, "zeros": zeros,
            "sparsity": zeros / total if total else 0.0}


def prune(
    model: Any = None,
    config: Prune | None = None,
    *,
    kit: Any = None,
    data: Any = None,
    out: str | Path | None = None,
    name: str | None = None,
    threads: int = 2,
    size: str = "full",
    image_size: int | None = None,
    measure: bool = True,
    budget: Any = None,
    progress: Progress | None = None,
) -> Any:
    """Prune a kit's model (``prune("perception", ...)`` or ``kit=``) or a torch module with
    ``data={"train": (inputs, targets), "test": ...}``; evaluate it against the original on the
    held-out test split under ``budget`` (a :class:`~rtinfer.optimize.Budget` or a
    ``--max-drop`` string; default: 1% of every metric with the default guards), measure both
    side by side on ONNX Runtime (``threads``; images at ``image_size`` when given), and write
    an artifact to ``out`` with the recipe.

    Returns a :class:`~rtinfer.optimize.TorchResult`: ``.module`` (pruned, eval mode),
    ``.model`` (its verified ONNX export), ``.report`` (JSON-ready) and ``.artifact``.
    """
    from rtinfer.optimize import _torch_job as job
    from rtinfer.optimize.passes.structured import prune_structured

    config = config or Prune()
    if isinstance(model, str) and kit is None:
        model, kit = None, model
    say = progress or (lambda _msg: None)
    task = job.task_from(model, kit=kit, data=data, size=size)
    budget = job.announce_budget(task, budget, say)
    job.keep_original(task)
    module = task.module
    details: dict[str, Any] = {}
    reached: tuple[int, ...] = ()
    if config.structured:
        details["structure"] = prune_structured(task, config, progress=say)
        reached = tuple(row.get("finetune", {}).get("steps", 0)
                        for row in details["structure"]["steps"])
    else:
        details["sparsity"] = prune_weights(module, config)
    ran = config.as_run(reached)
    return job.finish(task, module, kind="prune", recipe=[ran.to_dict()], details=details,
                      out=out, name=name, threads=threads, image_size=image_size,
                      measure=measure, budget=budget, progress=say)


def _layers(module: Any, types: tuple[str, ...]) -> list[tuple[str, Any]]:
    nn = require("torch", "Pruning").nn
    classes = tuple(getattr(nn, t) for t in types)
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, classes) and getattr(m, "weight", None) is not None]
