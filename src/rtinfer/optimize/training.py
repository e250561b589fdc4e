"""Bounded training shared by the torch-side passes: shuffled mini-batches, an AdamW loop
with warm-up and linear decay that stops at a step count or a time limit, and the
distillation loss.

:func:`fit` is what pruning's fine-tuning and distillation call: ``steps`` of :func:`train`
on a task's training split with :func:`kd_loss`, seeded (batches and dropout), so the same
call — and a replay of its recipe — trains the same model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from statistics import median
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer._progress import Progress
from rtinfer.optimize._torch_job import Arrays, TorchTask, logits_of, to_tensors

__all__ = ["batches", "fit", "kd_loss", "train"]


def batches(inputs: Arrays, targets: np.ndarray, size: int, seed: int, balance: float = 0.0
            ) -> Iterator[tuple[dict[str, Any], Any]]:
    """Endless shuffled mini-batches as torch tensors (a fresh permutation each epoch).

    With ``balance`` > 0 rows are drawn with replacement, a class of ``n_c`` rows in
    proportion to ``n_c ** (1 - balance)``: 0.5 draws a class of 25 rows one tenth as often as
    one of 2,500 instead of one hundredth, 1.0 draws every class equally often."""
    torch = require("torch", "Training")
    rng = np.random.default_rng(seed)
    n = len(targets)
    if balance > 0:
        _, inverse, counts = np.unique(targets, return_inverse=True, return_counts=True)
        p = counts[inverse].astype(np.float64) ** -balance
        p /= p.sum()
        while True:
            rows = np.sort(rng.choice(n, size, p=p))
            yield (to_tensors({k: v[rows] for k, v in inputs.items()}),
                   torch.from_numpy(targets[rows]))
    while True:
        order = rng.permutation(n)
        for lo in range(0, n - size + 1 if n >= size else 1, size):
            rows = np.sort(order[lo:lo + size])
            yield (to_tensors({k: v[rows] for k, v in inputs.items()}),
                   torch.from_numpy(targets[rows]))


def train(module: Any, step_loss: Callable[[int], Any], *, steps: int, lr: float,
          max_seconds: float | None, what: str, progress: Progress,
          params: Any = None, stop_at: int | None = None) -> dict[str, Any]:
    """At most ``steps`` AdamW steps of ``step_loss(i)`` (a scalar tensor), stopping early
    after ``max_seconds`` or after ``stop_at`` steps of the ``steps``-step schedule (a replay
    of a run its time limit cut short); progress every ~5% as "what i/steps"."""
    torch = require("torch", "Training")
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0, "stopped_early": False}
    opt = torch.optim.AdamW(params if params is not None else module.parameters(), lr=lr,
                            weight_decay=1e-4)
    # Linear warm-up over the first 10% of steps, then linear decay to zero (at 100 steps:
    # 0.1·lr at step 0, lr at step 9, 0.5·lr at step 55).
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warm, max(0.0, (steps - i) / max(steps - warm, 1))))
    module.train()
    start, losses, done = time.perf_counter(), [], 0
    every = max(1, steps // 20)
    try:
        for i in range(steps if stop_at is None else min(steps, stop_at)):
            loss = step_loss(i)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            done = i + 1
            if done % every == 0 or done == steps:
                progress(f"{what} {done}/{steps} (loss {median(losses[-every:]):.4f})")
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                progress(f"{what}: time limit of {max_seconds:g} s reached after {done} steps")
                break
    finally:
        module.eval()
    return {"steps": done, "seconds": round(time.perf_counter() - start, 1),
            "stopped_early": done < steps,
            "final_loss": median(losses[-every:]) if losses else None}


def kd_loss(student: Any, teacher: Any, targets: Any, *, temperature: float, alpha: float,
            embedding_weight: float) -> Any:
    """``alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1-alpha)·CE(s, y)`` on the logits, plus
    ``embedding_weight·(1 - cos)`` between the students's and teacher's ``sentence_embedding``
    when the outputs carry one. With ``alpha=0`` and no embedding term: plain cross-entropy.

    The T² factor keeps the soft term's gradients on the scale of the hard term's (Hinton et
    al.): with T=4 the softened probabilities' gradients shrink by ~1/16.
    """
    torch = require("torch", "Training")
    f = torch.nn.functional
    s_logits = logits_of(student)
    loss = f.cross_entropy(s_logits, targets) * (1 - alpha)
    if teacher is not None and alpha > 0:
        t = temperature
        soft = f.kl_div(f.log_softmax(s_logits / t, -1), f.log_softmax(logits_of(teacher) / t, -1),
                        reduction="batchmean", log_target=True)
        loss = loss + alpha * t * t * soft
    if (teacher is not None and embedding_weight > 0 and isinstance(student, Mapping)
            and "sentence_embedding" in student):
        cos = f.cosine_similarity(student["sentence_embedding"], teacher["sentence_embedding"])
        loss = loss + embedding_weight * (1 - cos).mean()
    return loss


def fit(task: TorchTask, module: Any, *, teacher: Any, steps: int, lr: float, batch_size: int,
        max_seconds: float | None, seed: int, what: str, progress: Progress,
        temperature: float = 1.0, alpha: float = 0.0, embedding_weight: float = 0.0,
        unlabeled: Arrays | None = None, unlabeled_share: float = 0.0,
        stop_at: int | None = None, balance: float = 0.0) -> dict[str, Any]:
    """``steps`` of :func:`train` on the task's train split with :func:`kd_loss` (at most
    ``stop_at`` of them). With a teacher and ``unlabeled`` inputs, ``unlabeled_share`` of each
    batch comes from them and is trained on the teacher's soft targets alone (no label exists
    for it). ``balance`` draws rare classes more often (:func:`batches`). ``seed`` fixes the
    batches and dropout, so the same call trains the same model."""
    torch = require("torch", "Training")
    inputs, targets = task.split("train")
    n_free = 0
    if teacher is not None and unlabeled is not None and unlabeled_share > 0:
        n_free = min(batch_size - 1, max(1, round(batch_size * unlabeled_share)))
    stream = batches(inputs, targets, batch_size - n_free, seed, balance)
    free = batches(unlabeled, np.zeros(len(next(iter(unlabeled.values()))), np.int64),
                   n_free, seed + 7) if n_free and unlabeled is not None else None

    def step_loss(_i: int) -> Any:
        xb, yb = next(stream)
        with torch.no_grad():
            t_out = teacher(**xb) if teacher is not None else None
        loss = kd_loss(module(**xb), t_out, yb, temperature=temperature, alpha=alpha,
                       embedding_weight=embedding_weight)
        if free is None:
            return loss
        xu, yu = next(free)
        with torch.no_grad():
            t_free = teacher(**xu)
        soft = kd_loss(module(**xu), t_free, yu, temperature=temperature, alpha=1.0,
                       embedding_weight=embedding_weight)
        return (loss * (batch_size - n_free) + soft * n_free) / batch_size

    # Embedding tables stay as they are: most rows are words the training split never uses,
    # and updating MiniLM's 30,522 x 384 table would cost as much optimizer time as the rest.
    frozen = {id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding)
              for p in m.parameters()}
    params = [p for p in module.parameters() if id(p) not in frozen and p.requires_grad]
    with torch.random.fork_rng(devices=[]):  # dropout seeded; the caller's RNG untouched
        torch.manual_seed(seed)
        return train(module, step_loss, steps=steps, lr=lr, max_seconds=max_seconds,
                     what=what, progress=progress, params=params, stop_at=stop_at)
