"""What an optimized model must keep: a budget of several limits, all of which must hold.

One number is not enough. On the intent kit a distilled student gained 0.5 point of accuracy
while it lost 2.3 points of macro-F1 and agreed with the original on 96.5% of held-out
sentences; a budget on accuracy alone chose it. So a budget guards every metric the task
declares, the worst per-class recall, and agreement with the original's predictions::

    budget = Budget.from_options("1pt", headline="accuracy")
    budget = budget.resolve(["accuracy", "macro_f1"], float_outputs)
    budget.describe()
    # 'accuracy may drop by at most 1 point; macro_f1 may drop by at most 1 point; no class's
    #  recall may drop by more than 5 points; top-1 agreement with the original (logits) at
    #  least 0.98'

``--max-drop`` forms (the same strings in Python):

- ``"1pt"`` / ``"1%"``: every metric the task declares (the kit's, or the entries of a user
  metric's dict), absolute points (1 point = 0.01) or relative to the original's value; with
  ``--metric NAME`` naming one metric, that metric only.
- ``"accuracy=1pt,macro_f1=2%"``: each named; a bare value in the list (``"1pt,macro_f1=2pt"``)
  covers the declared metrics not named. Names may also be fidelity figures
  (``sentence_embedding.cosine`` = the worst per-sample cosine, ``logits.top1``, or ``cosine``
  / ``top1`` for the first output) and ``class_recall``.

Guards that are on unless set otherwise (``--min-agreement``, ``class_recall=...``):

- ``class_recall``: no class's recall may drop by more than 5 points. A class with fewer than
  20 validation samples may lose one sample (with 12 samples one flip is 8.3 points: that is
  noise, two flips are not).
- agreement: the candidate's top-1 prediction equals the original's on at least 98% of the
  samples, for outputs with a class axis. Labels are not needed for it.
- varied agreement: the same floor on *varied* validation text (each sentence with three or
  four edits: fillers, dropped or swapped words, typos; :mod:`rtinfer.optimize.augment`), for
  tasks whose validation split keeps its sentences. Template text flatters: on the intent kit
  a static int8 model agreed with the original on 99.2% of validation sentences, 96.7% of
  varied ones and 93.7% of hand-written requests, while the one int8 model that kept 96.8% on
  the hand-written requests kept 98.9% on varied text. Off-template inputs sit closer to the
  decision boundary (11% of hand-written requests have a top-2 logit margin under 0.5, against
  3% of validation sentences), where int8's noise flips decisions.

A guard that cannot apply (no labels, no class axis) is left out when it is a default and is
an error when it was asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["AGREEMENT", "CLASS_RECALL", "DEFAULT_MAX_DROP", "DEFAULT_MIN_AGREEMENT", "Budget",
           "Check", "Limit", "class_output", "fidelity_value", "has_varied", "judge"]

#: The budget when none is given: 1% of the original's value of every declared metric.
DEFAULT_MAX_DROP = "1%"
#: Default floor of top-1 agreement with the original (outputs with a class axis).
DEFAULT_MIN_AGREEMENT = 0.98
#: Default largest drop of any one class's recall.
DEFAULT_CLASS_RECALL = "5pt"
CLASS_RECALL = "class_recall"
AGREEMENT = "agreement"        # stands for "<class output>.top1" until resolved
VARIED = "varied_agreement"    # stands for "<class output>.top1@varied" until resolved
VARIED_SUFFIX = "@varied"
_EVERY = "*"                   # stands for "every declared metric" until resolved
_SMALL_CLASS = 20              # below this many samples a class may lose one sample
_FIDELITY_FIGURES = {"cosine": "cosine_min", "top1": "top1_agreement", "sqnr": "sqnr_db",
                     "cosine_min": "cosine_min", "cosine_mean": "cosine_mean",
                     "top1_agreement": "top1_agreement"}


@dataclass(frozen=True)
class Limit:
    """``metric`` may drop by at most ``max_drop`` (absolute points or relative share)."""

    metric: str
    max_drop: float
    kind: str = "absolute"   # "absolute" (1 point = 0.01) or "relative" (share of original)
    default: bool = False    # a guard that was not asked for: left out where it cannot apply

    @classmethod
    def parse(cls, text: str, metric: str, *, default: bool = False) -> Limit:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(pt|points?|%)\s*", text)
        if not m:
            raise ValueError(
                f"--max-drop {text!r} must say absolute or relative: e.g. '0.5pt' (half a point "
                "of the metric, i.e. 0.005 of accuracy) or '1%' (1% of the original's value); "
                "several at once as 'accuracy=1pt,macro_f1=1pt'")
        value, unit = float(m.group(1)), m.group(2)
        return cls(metric, value / 100, "relative" if unit == "%" else "absolute", default)

    def allowed(self, original: float) -> float:
        return self.max_drop * abs(original) if self.kind == "relative" else self.max_drop

    def describe(self) -> str:
        amount = (f"{self.max_drop:.2%} of the original's value" if self.kind == "relative"
                  else f"{self.max_drop * 100:g} point(s)")
        if self.metric == CLASS_RECALL:
            return f"no class's recall may drop by more than {amount}"
        if self.metric == VARIED:  # not resolved yet: applies where the task has sentences
            return (f"top-1 agreement with the original on varied text (text tasks) at least "
                    f"{1 - self.max_drop:.4g}")
        if self.metric.endswith(VARIED_SUFFIX):
            output = self.metric.removesuffix(VARIED_SUFFIX).rpartition(".")[0]
            return (f"top-1 agreement with the original ({output}) on varied text "
                    f"at least {1 - self.max_drop:.4g}")
        if _is_agreement(self.metric) and self.kind == "absolute":
            output = self.metric.rpartition(".")[0] or "the class output"
            return (f"top-1 agreement with the original ({output}) at least "
                    f"{1 - self.max_drop:.4g}")
        return f"{self.metric} may drop by at most {amount}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "max_drop": self.max_drop, "kind": self.kind,
                "default": self.default, "text": self.describe()}


@dataclass(frozen=True)
class Budget:
    """Limits that must all hold; ``headline`` is the metric tables and charts show."""

    limits: tuple[Limit, ...]
    headline: str
    default: bool = False  # no --max-drop was given: this is DEFAULT_MAX_DROP
    resolved: bool = False

    @classmethod
    def parse(cls, text: str, metric: str) -> Budget:
        """One limit on one metric, no guards: ``Budget.parse("0.5pt", "accuracy")``."""
        return cls((Limit.parse(text, metric),), metric)

    @classmethod
    def from_options(cls, max_drop: str | None, *, headline: str, every_declared: bool = True,
                     min_agreement: float | None = None,
                     class_recall: str | None = None) -> Budget:
        """The budget of a job from its options (see the module docstring); malformed text
        fails here, before any work. ``every_declared=False``: a bare value limits
        ``headline`` only (``--metric`` named one metric)."""
        limits: list[Limit] = []
        for part in (max_drop or DEFAULT_MAX_DROP).split(","):
            name, eq, value = part.rpartition("=")
            if not eq:
                value, name = part, (_EVERY if every_declared else headline)
            name = name.strip()
            if not name:
                raise ValueError(f"--max-drop {max_drop!r}: an entry has '=' but no metric "
                                 "name before it (e.g. 'accuracy=1pt')")
            if any(lim.metric == name for lim in limits):
                raise ValueError(f"--max-drop {max_drop!r} names {name!r} twice")
            limits.append(Limit.parse(value, name))
        if min_agreement is not None:
            if not 0.0 <= min_agreement <= 1.0:
                raise ValueError(f"--min-agreement is a share of samples in [0, 1] (0.98 = "
                                 f"98%; 0 turns the guard off), got {min_agreement}")
            limits.append(Limit(AGREEMENT, 1.0 - min_agreement))
        elif not any(_is_agreement(lim.metric) for lim in limits):
            limits.append(Limit(AGREEMENT, 1.0 - DEFAULT_MIN_AGREEMENT, default=True))
        floor = next(lim for lim in limits if _is_agreement(lim.metric)).max_drop
        # The same floor on varied text, where the task has any (a guard: never an error).
        limits.append(Limit(VARIED, floor, default=True))
        if class_recall is not None:
            limits = [lim for lim in limits if lim.metric != CLASS_RECALL]
            limits.append(Limit.parse(class_recall, CLASS_RECALL))
        elif not any(lim.metric == CLASS_RECALL for lim in limits):
            limits.append(Limit.parse(DEFAULT_CLASS_RECALL, CLASS_RECALL, default=True))
        return cls(tuple(limits), headline, default=max_drop is None)

    def resolve(self, declared: Sequence[str], reference: Mapping[str, np.ndarray],
                *, labels: bool | None = None, varied: bool = False) -> Budget:
        """The concrete limits for a task declaring ``declared`` metrics whose original
        produced ``reference`` outputs: ``*`` becomes each declared metric (the headline when
        there are none), ``agreement`` the class output's top-1 figure (and, with ``varied``
        text to judge on, the same on it); guards that cannot apply are dropped when defaults
        and raise when asked for; unknown names raise."""
        if self.resolved:
            return self
        labels = bool(declared) if labels is None else labels
        named = {lim.metric for lim in self.limits}
        out: list[Limit] = []
        classes = class_output(reference)
        for lim in self.limits:
            if lim.metric == _EVERY:
                out += [replace(lim, metric=m) for m in (declared or [self.headline])
                        if m not in named]
            elif lim.metric == VARIED:
                if varied and classes is not None and lim.max_drop < 1.0:
                    out.append(replace(lim, metric=f"{classes}.top1{VARIED_SUFFIX}"))
            elif lim.metric == AGREEMENT:
                if classes is None or lim.max_drop >= 1.0:  # no class axis, or turned off
                    if classes is None and not lim.default and lim.max_drop < 1.0:
                        raise ValueError("--min-agreement needs an output with a class axis "
                                         f"(N, classes); the outputs are {_shapes(reference)}")
                    continue
                out.append(replace(lim, metric=f"{classes}.top1"))
            elif lim.metric == CLASS_RECALL:
                if classes is None or not labels:
                    if not lim.default:
                        raise ValueError("a class_recall limit needs labels and an output with "
                                         f"a class axis; outputs: {_shapes(reference)}")
                    continue
                out.append(lim)
            else:
                out.append(lim)
        for lim in out:
            if lim.metric != CLASS_RECALL:
                _check_name(lim.metric.removesuffix(VARIED_SUFFIX), declared, reference)
        return replace(self, limits=tuple(out), resolved=True)

    def without_varied(self) -> Budget:
        """The budget less its varied-text limits (for data with no varied text to judge)."""
        return replace(self, limits=tuple(lim for lim in self.limits
                                          if not lim.metric.endswith(VARIED_SUFFIX)))

    @property
    def headline_limit(self) -> Limit | None:
        return next((lim for lim in self.limits if lim.metric == self.headline), None)

    # What one-number readers (the Pareto chart's budget line, older reports) use: the
    # headline's limit, or None when the headline is shown but not limited.
    @property
    def metric(self) -> str:
        return self.headline

    @property
    def max_drop(self) -> float | None:
        head = self.headline_limit
        return head.max_drop if head else None

    @property
    def kind(self) -> str | None:
        head = self.headline_limit
        return head.kind if head else None

    def describe(self) -> str:
        if not self.resolved and self.limits and self.limits[0].metric == _EVERY:
            first = self.limits[0]
            rest = "; ".join(lim.describe() for lim in self.limits[1:])
            every = Limit.describe(replace(first, metric="every declared metric"))
            return every + ("; " + rest if rest else "")
        return "; ".join(lim.describe() for lim in self.limits)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.headline, "max_drop": self.max_drop, "kind": self.kind,
                "text": self.describe(), "default": self.default,
                "limits": [lim.to_dict() for lim in self.limits]}


@dataclass
class Check:
    """One limit judged: the original's value, the candidate's, the drop and what was
    allowed. ``note`` says where it was worst (for class recall: which class)."""

    metric: str
    original: float
    value: float
    drop: float
    allowed: float
    ok: bool
    text: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "original": self.original, "value": self.value,
                "drop": self.drop, "allowed": self.allowed, "ok": self.ok, "limit": self.text,
                "note": self.note}

    @property
    def used(self) -> float:
        """Share of the allowance used (1.0 = at the limit); a drop where none is allowed
        counts as 1e6 (finite, so results stay valid JSON)."""
        if self.allowed > 0:
            return self.drop / self.allowed
        return 1e6 if self.drop > 1e-12 else 0.0


def judge(budget: Budget, *, metrics: Mapping[str, float], original: Mapping[str, float],
          fidelity: Mapping[str, Mapping[str, float]], targets: np.ndarray | None,
          reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
          varied: Mapping[str, Mapping[str, float]] | None = None) -> list[Check]:
    """Every limit of a resolved ``budget`` checked against one candidate; ``varied`` is the
    fidelity table on varied text (needed when the budget has a varied-agreement limit)."""
    checks = []
    for lim in budget.limits:
        if lim.metric == CLASS_RECALL:
            checks.append(_class_recall(lim, targets, reference, candidate))
            continue
        if lim.metric.endswith(VARIED_SUFFIX):
            if varied is None:
                raise ValueError("the budget has a varied-text limit: give the fidelity on "
                                 "varied text (varied=)")
            value, before = fidelity_value(varied, lim.metric.removesuffix(VARIED_SUFFIX)), 1.0
        elif lim.metric in metrics:
            value, before = metrics[lim.metric], original[lim.metric]
        else:
            value, before = fidelity_value(fidelity, lim.metric), 1.0  # agrees with itself
        drop = before - value
        allowed = lim.allowed(before)
        checks.append(Check(lim.metric, float(before), float(value), float(drop),
                            float(allowed), bool(drop <= allowed + 1e-12), lim.describe()))
    return checks


def class_output(outputs: Mapping[str, np.ndarray]) -> str | None:
    """The output holding class scores (N, classes): ``logits``, else ``probabilities``,
    else the first float (N, C > 1) output whose name says scores (``logit``, ``prob``,
    ``score``, ``class``); None without one. A float (N, D) output by any other name may be
    an embedding, whose argmax means nothing: it gets no agreement guard."""
    def scores(v: np.ndarray) -> bool:
        return v.dtype.kind == "f" and v.ndim == 2 and v.shape[1] > 1

    for name in ("logits", "probabilities"):
        if name in outputs and scores(outputs[name]):
            return name
    return next((k for k, v in outputs.items() if scores(v) and any(
        word in k.lower() for word in ("logit", "prob", "score", "class"))), None)


def fidelity_value(fid: Mapping[str, Mapping[str, float]], name: str) -> float:
    """``<output>.<figure>`` (or a bare figure, for the first output) of a fidelity table."""
    output, _, figure = name.rpartition(".")
    figure = _FIDELITY_FIGURES.get(figure, figure)
    if not output:
        output = next(iter(fid))
    if output not in fid or figure not in fid[output]:
        raise ValueError(f"unknown fidelity metric {name!r}; outputs and figures: "
                         f"{ {k: sorted(v) for k, v in fid.items()} }")
    return float(fid[output][figure])


def _class_recall(lim: Limit, targets: np.ndarray | None, reference: Mapping[str, np.ndarray],
                  candidate: Mapping[str, np.ndarray]) -> Check:
    name = class_output(reference)
    if targets is None or name is None:  # resolve() keeps this limit only where it applies
        raise ValueError("class_recall needs labels and a class output")
    y = np.asarray(targets)
    before, after = reference[name].argmax(1), candidate[name].argmax(1)
    worst: tuple[float, float, float, float, int, int] | None = None  # margin, drop, ...
    for c in np.unique(y):
        rows = y == c
        n = int(rows.sum())
        r0, r1 = float(np.mean(before[rows] == c)), float(np.mean(after[rows] == c))
        allowed = lim.allowed(r0)
        if n < _SMALL_CLASS:
            allowed = max(allowed, 1.0 / n)
        drop = r0 - r1
        if worst is None or drop - allowed > worst[0]:
            worst = (drop - allowed, drop, allowed, r0, int(c), n)
    if worst is None:
        raise ValueError("class_recall needs at least one labelled sample")
    margin, drop, allowed, r0, c, n = worst
    return Check(CLASS_RECALL, r0, r0 - drop, drop, allowed, bool(margin <= 1e-12),
                 lim.describe(), note=f"class {c} ({n} samples): recall {r0:.3f} → "
                                      f"{r0 - drop:.3f}")


def _is_agreement(metric: str) -> bool:
    """``<output>.top1`` (not a bare ``top1``: the perception kit's accuracy is named so)."""
    return metric == AGREEMENT or (
        "." in metric and metric.rpartition(".")[2] in ("top1", "top1_agreement"))


def has_varied(budget: Budget) -> bool:
    """Whether a resolved budget judges on varied text."""
    return any(lim.metric.endswith(VARIED_SUFFIX) for lim in budget.limits)


def _check_name(metric: str, declared: Sequence[str], reference: Mapping[str, np.ndarray]
                ) -> None:
    if metric in declared:
        return
    output, _, figure = metric.rpartition(".")
    if figure in _FIDELITY_FIGURES and (not output or output in reference):
        if "sqnr" in figure:
            raise ValueError("SQNR has no original value to drop from; budget a cosine or top1 "
                             "figure instead (SQNR is reported alongside)")
        return
    raise ValueError(
        f"the budget names {metric!r}, which this task does not measure; task metrics: "
        f"{list(declared) or 'none (no labels)'}, fidelity figures: <output>.cosine, "
        f"<output>.top1 with outputs {sorted(reference)}, and {CLASS_RECALL}")


def _shapes(outputs: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in outputs.items()}
