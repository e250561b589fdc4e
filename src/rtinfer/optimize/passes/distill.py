"""Distillation: train a smaller student to reproduce the teacher, then fine-tune it on labels.

    result = distill("intent", Distill(steps=800, finetune_steps=200), out="repo")
    result = distill(kit="intent", config=Distill(teacher=big, student=small))

The student is given (``Distill(student=module)``) or derived from the teacher by
:func:`derive_student`: a copy keeping ``layers`` (a share, 0.5 = half) of its transformer
layers, evenly spaced and always the first and the last (MiniLM's 6 layers -> layers 0, 2 and
5), initialised with the teacher's weights — embeddings, kept layers and head included —
and, with ``width < 1``, only that share of each kept layer's FFN neurons (the least active on
the calibration split are removed, as ``Prune(method="activation", structured=True)`` does).

The loss per batch (:func:`rtinfer.optimize.training.kd_loss`) is
``alpha·T²·KL(teacher‖student at temperature T) + (1-alpha)·CE(labels)``, plus
``embedding_weight·(1 - cos)`` between the sentence embeddings when the model outputs one (the
intent kit's does: it is judged by its cosine too). ``steps`` of that, then ``finetune_steps``
on the labels alone. Training is bounded by ``max_seconds`` (split between the two phases in
proportion to their steps) and reports progress; an interrupted run writes nothing (artifacts
are staged and renamed into place).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rtinfer._deps import require
from rtinfer._progress import Progress

__all__ = ["CONFIG_VERSION", "Distill", "derive_student", "distill"]

CONFIG_VERSION = 4  # 2: ``augment`` (teacher-labelled variants of the training text);
# 3: ``stopped_at`` (where a time limit cut the training short); 4: ``balance`` (rare classes
# drawn more often; absent before, which is 0)


@dataclass(frozen=True)
class Distill:
    """One distillation setting; ``to_dict`` records it in a recipe (modules by description).

    ``teacher=None`` means the model given to :func:`distill`; ``student=None`` derives one.
    """

    teacher: Any = None
    student: Any = None
    temperature: float = 4.0
    alpha: float = 0.5
    steps: int = 600
    layers: float = 0.5
    width: float = 1.0
    embedding_weight: float = 1.0
    finetune_steps: int = 100
    lr: float = 1e-4
    batch_size: int = 32
    max_seconds: float | None = None
    seed: int = 0
    augment: float = 0.5
    # Class balance of the labelled batches (training.batches): 0 draws rows as they come,
    # 0.5 by the square root of each class's share, 1 every class equally.
    balance: float = 0.0
    # The steps each phase (distillation, fine-tuning) reached when ``max_seconds`` cut it
    # short; a replay trains exactly that far. None: both phases ran their full steps.
    stopped_at: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"Distill.temperature must be > 0 (4.0 is typical), got "
                             f"{self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"Distill.alpha weighs the teacher's soft targets against the "
                             f"labels and must be in [0, 1], got {self.alpha}")
        if not 0.0 < self.width <= 1.0:
            raise ValueError(f"Distill.width is the share of FFN neurons the derived student "
                             f"keeps in each layer, in (0, 1] (1.0 = all); got {self.width}")
        if not 0.0 < self.layers <= 1.0:
            raise ValueError(f"Distill.layers is the share of transformer layers the derived "
                             f"student keeps, in (0, 1] (0.5 = half); got {self.layers}")
        for name in ("steps", "finetune_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"Distill.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.lr <= 0 or self.embedding_weight < 0:
            raise ValueError("Distill.batch_size must be >= 1, lr > 0 and embedding_weight >= 0")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"Distill.max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.stopped_at is not None:
            done = tuple(int(n) for n in self.stopped_at)
            if len(done) != 2 or not (0 <= done[0] <= self.steps
                                      and 0 <= done[1] <= self.finetune_steps):
                raise ValueError(f"Distill.stopped_at is (distillation steps, fine-tuning "
                                 f"steps) reached, within ({self.steps}, "
                                 f"{self.finetune_steps}); got {self.stopped_at}")
            object.__setattr__(self, "stopped_at", done)
        if not 0.0 <= self.balance <= 1.0:
            raise ValueError(f"Distill.balance is in [0, 1] (0 = rows as they come, 0.5 = by "
                             f"the square root of each class's share); got {self.balance}")
        if not 0.0 <= self.augment < 1.0:
            raise ValueError(f"Distill.augment is the share of each distillation batch drawn "
                             f"from teacher-labelled variants of the training text, in [0, 1) "
                             f"(0 = the labelled split only); got {self.augment}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Distill:
        """The setting of a recipe entry (``to_dict``'s output). A recorded teacher or
        student is a description, not a module: replaying it needs the module given again,
        so such an entry is refused."""
        if data.get("pass") != "distill":
            raise ValueError(f"not a distill recipe entry: {data.get('pass')!r}")
        version = data.get("version", 1)
        if version > CONFIG_VERSION:
            raise ValueError(f"distill recipe version {version} is newer than this rtinfer "
                             f"reads ({CONFIG_VERSION}); upgrade rtinfer")
        if data.get("student") is not None or data.get("teacher") is not None:
            raise ValueError("this recipe names a given teacher/student module "
                             f"({data.get('teacher') or data.get('student')}); pass it as "
                             "Distill(student=..., teacher=...) to replay")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__
                  and k not in ("teacher", "student")}
        if version < 2:
            fields["augment"] = 0.0  # version 1 trained on the labelled split only
        if fields.get("stopped_at") is not None:
            fields["stopped_at"] = tuple(fields["stopped_at"])
        return cls(**fields)

    def as_run(self, reached: tuple[int, int]) -> Distill:
        """This setting as its run went, for the recipe: no time limit, and the steps each
        phase ``reached`` when the limit cut it short."""
        cut = reached != (self.steps, self.finetune_steps)
        return replace(self, max_seconds=None, stopped_at=reached if cut else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pass": "distill", "version": CONFIG_VERSION}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in ("teacher", "student"):
                value = None if value is None else _describe(value)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self) -> str:
        student = ("given student" if self.student is not None
                   else f"student with {self.layers:.0%} of the teacher's layers"
                   + (f" and {self.width:.0%} of its FFN neurons" if self.width < 1 else ""))
        extra = (f", {self.augment:.0%} of each batch teacher-labelled text variants"
                 if self.augment else "")
        extra += f", classes balanced {self.balance:g}" if self.balance else ""
        return (f"distillation into a {student}: T={self.temperature:g}, alpha={self.alpha:g}"
                f"{extra}, {self.steps} steps + {self.finetune_steps} fine-tuning steps on "
                "labels")


def derive_student(teacher: Any, layers: float = 0.5) -> tuple[Any, list[int]]:
    """A copy of ``teacher`` keeping ``layers`` of its transformer layers; returns the student
    and the kept layer indices (of 6 layers at 0.5: ``[0, 2, 5]``)."""
    student = copy.deepcopy(teacher).eval()
    if layers >= 1.0:  # every layer kept (a narrower student only: ``width``)
        return student, []
    owner, attr, stack = _layer_stack(student)
    n = len(stack)
    k = max(1, round(n * layers))
    keep = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)}) if k > 1 else [n - 1]
    nn = require("torch", "Distillation").nn
    setattr(owner, attr, nn.ModuleList([stack[i] for i in keep]))
    for m in student.modules():  # keep the model's own config truthful
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(keep)
    return student, keep


def distill(
    model: Any = None,
    config: Distill | None = None,
    *,
    kit: Any = None,
    data: Any = None,
    out: str | Path | None = None,
    name: str | None = None,
    threads: int = 2,
    size: str = "full",
    measure: bool = True,
    budget: Any = None,
    progress: Progress | None = None,
) -> Any:
    """Distill a kit's model (``distill("intent", ...)``) or ``config.teacher`` / a torch
    module with ``data={"train": (inputs, targets), "test": ...}``; evaluate the student
    against the teacher on held-out data, measure both side by side on ONNX Runtime, write an
    artifact to ``out``. Returns a :class:`~rtinfer.optimize.TorchResult`."""
    from rtinfer.optimize import _torch_job as job
    from rtinfer.optimize import training

    config = config or Distill()
    if isinstance(model, str) and kit is None:
        model, kit = None, model
    say = progress or (lambda _msg: None)
    task = job.task_from(config.teacher if config.teacher is not None else model, kit=kit,
                         data=data, size=size)
    budget = job.announce_budget(task, budget, say)
    teacher = job.keep_original(task)
    details: dict[str, Any] = {}
    if config.student is not None:
        student = config.student
        details["student"] = {"given": _describe(student)}
    else:
        student, keep = derive_student(teacher, config.layers)
        details["student"] = {"derived": True, "kept_layers": keep}
        if config.width < 1.0:
            details["student"]["narrowed"] = _narrow(task, student, config, say)
    details["student"]["parameters"] = job.count_parameters(student)
    details["teacher_parameters"] = job.count_parameters(teacher)
    total = config.steps + config.finetune_steps

    def share(n: int) -> float | None:
        if config.max_seconds is None or config.stopped_at is not None or not total:
            return None  # a replay trains to the recorded steps, whatever the clock says
        return config.max_seconds * n / total

    stop = config.stopped_at or (None, None)

    unlabeled, details["augment"] = _variants(task, config, say)
    details["training"] = {
        "distill": training.fit(task, student, teacher=teacher, steps=config.steps,
                           max_seconds=share(config.steps), seed=config.seed,
                           what="distilling", temperature=config.temperature,
                           alpha=config.alpha, embedding_weight=config.embedding_weight,
                           lr=config.lr, batch_size=config.batch_size, progress=say,
                           unlabeled=unlabeled, unlabeled_share=config.augment,
                           stop_at=stop[0], balance=config.balance),
        "finetune": training.fit(task, student, teacher=None, steps=config.finetune_steps,
                            max_seconds=share(config.finetune_steps), seed=config.seed + 1,
                            what="fine-tuning on labels", lr=config.lr,
                            batch_size=config.batch_size, progress=say, stop_at=stop[1],
                            balance=config.balance),
    }
    ran = config.as_run((details["training"]["distill"]["steps"],
                         details["training"]["finetune"]["steps"]))
    return job.finish(task, student, kind="distill", recipe=[ran.to_dict()],
                      details=details, out=out, name=name, threads=threads, measure=measure,
                      budget=budget, progress=say)


def _variants(task: Any, config: Distill, say: Progress) -> tuple[Any, dict[str, Any]]:
    """Teacher-labelled inputs beyond the labelled split: variants of the training sentences
    (:mod:`rtinfer.optimize.augment`), tokenized like the task's inputs. Only for tasks
    whose training split keeps its raw sentences and can pre-process new ones (the kits)."""
    if not config.augment:
        return None, {"used": False, "why": "Distill.augment is 0"}
    kit = getattr(task, "kit", None)
    raw = kit.split("train").raw.get("sentence") if kit is not None else None
    if kit is None or raw is None:
        return None, {"used": False, "why": "the task keeps no raw training text to vary"}
    from rtinfer.optimize.augment import text_variants

    sentences = text_variants([str(s) for s in raw], len(raw), seed=config.seed)
    say(f"tokenizing {len(sentences):,} teacher-labelled variants of the training sentences")
    return kit.preprocess(sentences), {"used": True, "sentences": len(sentences),
                                       "share_of_batch": config.augment,
                                       "examples": sentences[:5]}


def _narrow(task: Any, student: Any, config: Distill, say: Progress) -> dict[str, Any]:
    """Remove the least active FFN neurons (mean |activation| on calibration data) so each
    layer keeps ``config.width`` of them; attention and hidden sizes stay."""
    from rtinfer.optimize.passes.prune import Prune
    from rtinfer.optimize.passes.structured import prune_structured

    return prune_structured(task, Prune(method="activation", structured=True,
                                        amount=1.0 - config.width, scope="layer"),
                            module=student, progress=say)


def _layer_stack(module: Any) -> tuple[Any, str, Any]:
    """The longest ``ModuleList`` of same-typed blocks: a transformer's layer stack."""
    nn = require("torch", "Distillation").nn
    best = None
    for owner in module.modules():
        for attr, child in owner.named_children():
            if (isinstance(child, nn.ModuleList) and len(child) > 1
                    and len({type(c) for c in child}) == 1
                    and (best is None or len(child) > len(best[2]))):
                best = (owner, attr, child)
    if best is None:
        raise ValueError(f"{type(module).__name__} has no stack of repeated layers (a "
                         "ModuleList of transformer blocks) to take half of; give "
                         "Distill(student=...) instead")
    return best


def _describe(module: Any) -> str:
    from rtinfer.models.torch_export import state_hash

    return f"{type(module).__name__} (sha256 {state_hash(module)[:12]})"
