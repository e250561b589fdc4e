"""Budgets of several limits: parsing, resolution against a task, and the judgement."""

from __future__ import annotations

import numpy as np
import pytest

from rtinfer.metrics import accuracy, macro_f1
from rtinfer.optimize.budget import Budget, Limit
from rtinfer.optimize.evaluate import NO_LABELS, evaluate_candidate

DECLARED = ["accuracy", "macro_f1"]


def _metric(targets: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    return {"accuracy": accuracy(targets, outputs["logits"]),
            "macro_f1": macro_f1(targets, outputs["logits"])}


def _onehot(pred: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    logits = np.full((len(pred), classes), -1.0, np.float32)
    logits[np.arange(len(pred)), pred] = 1.0
    return {"logits": logits}


def _labels(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_a_bare_value_limits_every_declared_metric_and_the_guards_come_with_it() -> None:
    ref = _onehot(np.zeros(4, int), 3)
    budget = Budget.from_options("1pt", headline="accuracy").resolve(DECLARED, ref)
    assert [(lim.metric, lim.max_drop, lim.kind) for lim in budget.limits] == [
        ("accuracy", 0.01, "absolute"), ("macro_f1", 0.01, "absolute"),
        ("logits.top1", pytest.approx(0.02), "absolute"),
        ("class_recall", 0.05, "absolute")]
    text = budget.describe()
    assert "accuracy may drop by at most 1 point(s)" in text
    assert "macro_f1 may drop by at most 1 point(s)" in text
    assert "top-1 agreement with the original (logits) at least 0.98" in text
    assert "no class's recall may drop by more than 5 point(s)" in text
    assert budget.to_dict()["limits"][0] == {"metric": "accuracy", "max_drop": 0.01,
                                             "kind": "absolute", "default": False,
                                             "text": "accuracy may drop by at most 1 point(s)"}


def test_no_budget_is_the_default_never_a_disabled_one() -> None:
    budget = Budget.from_options(None, headline="accuracy")
    assert budget.default
    assert budget.describe().startswith("every declared metric may drop by at most 1.00%")
    resolved = budget.resolve(DECLARED, _onehot(np.zeros(4, int), 3))
    assert {lim.metric for lim in resolved.limits} == {"accuracy", "macro_f1", "logits.top1",
                                                       "class_recall"}
    assert all(lim.kind == "relative" for lim in resolved.limits[:2])


def test_named_limits_and_a_bare_value_for_the_rest() -> None:
    ref = _onehot(np.zeros(4, int), 3)
    budget = Budget.from_options("2pt,macro_f1=1%,class_recall=10pt", headline="accuracy",
                                 min_agreement=0.9).resolve(DECLARED, ref)
    got = {lim.metric: (lim.max_drop, lim.kind) for lim in budget.limits}
    assert got == {"accuracy": (0.02, "absolute"), "macro_f1": (0.01, "relative"),
                   "class_recall": (0.1, "absolute"),
                   "logits.top1": (pytest.approx(0.1), "absolute")}


def test_metric_named_alone_limits_only_that_metric() -> None:
    ref = {"emb": np.ones((4, 8), np.float32), "class_scores": np.ones((4, 3), np.float32)}
    budget = Budget.from_options("1pt", headline="emb.cosine", every_declared=False)
    resolved = budget.resolve([], ref)
    # An (N, D) output is an embedding unless its name says scores: no argmax agreement on it.
    assert [lim.metric for lim in resolved.limits] == ["emb.cosine", "class_scores.top1"]
    # --min-agreement 0 turns the guard off even where no output has a class axis.
    off = Budget.from_options("1pt", headline="emb.cosine", min_agreement=0.0)
    assert [lim.metric for lim in off.resolve([], {"emb": ref["emb"]}).limits] == ["emb.cosine"]


def test_a_task_metric_named_top1_is_a_metric_not_the_agreement_guard() -> None:
    """The perception kit's accuracy is called top1: it keeps its own limit, and the
    agreement guard is still added."""
    ref = _onehot(np.zeros(4, int), 3)
    budget = Budget.from_options("0.5pt", headline="top1").resolve(["top1", "macro_f1"], ref)
    assert [lim.metric for lim in budget.limits] == ["top1", "macro_f1", "logits.top1",
                                                     "class_recall"]
    assert budget.limits[0].describe() == "top1 may drop by at most 0.5 point(s)"
    assert budget.to_dict()["max_drop"] == 0.005


@pytest.mark.parametrize(("text", "message"), [
    ("1", "must say absolute or relative"),
    ("accuracy=1pt,accuracy=2pt", "names 'accuracy' twice"),
    ("=1pt", "no metric name"),
])
def test_malformed_budgets_fail_before_any_work(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget.from_options(text, headline="accuracy")


def test_a_name_the_task_does_not_measure_is_refused_with_what_it_has() -> None:
    budget = Budget.from_options("f1=1pt", headline="accuracy")
    with pytest.raises(ValueError, match=r"'f1', which this task does not measure; task "
                                         r"metrics: \['accuracy', 'macro_f1'\]"):
        budget.resolve(DECLARED, _onehot(np.zeros(4, int), 3))


def test_guards_that_cannot_apply_are_dropped_when_defaults_and_refused_when_asked() -> None:
    embeddings = {"sentence_embedding": np.ones((4, 1), np.float32)}  # no class axis
    default = Budget.from_options(None, headline="sentence_embedding.cosine")
    resolved = default.resolve([], embeddings)
    assert [lim.metric for lim in resolved.limits] == ["sentence_embedding.cosine"]
    asked = Budget.from_options("1pt", headline="sentence_embedding.cosine", min_agreement=0.99)
    with pytest.raises(ValueError, match="--min-agreement needs an output with a class axis"):
        asked.resolve([], embeddings)
    recall = Budget.from_options("1pt,class_recall=5pt", headline="sentence_embedding.cosine")
    with pytest.raises(ValueError, match="class_recall limit needs labels"):
        recall.resolve([], embeddings)
    with pytest.raises(ValueError, match=r"--min-agreement is a share of samples in \[0, 1\]"):
        Budget.from_options(None, headline="accuracy", min_agreement=98)


def test_min_agreement_zero_turns_the_guard_off() -> None:
    budget = Budget.from_options("1pt", headline="accuracy", min_agreement=0.0)
    resolved = budget.resolve(DECLARED, _onehot(np.zeros(4, int), 3))
    assert "logits.top1" not in {lim.metric for lim in resolved.limits}


def test_accuracy_up_while_one_class_is_lost_is_over_budget() -> None:
    """The intent kit's failure in small: the candidate fixes many mistakes of a common class
    (accuracy rises) and loses a whole rare class; a one-number budget let it through."""
    y = _labels([200, 200, 40])
    original = y.copy()
    original[:60] = 1                   # the original gets 60 of class 0 wrong
    candidate = y.copy()
    candidate[400:] = 0                 # the candidate gets class 0 right, and loses class 2
    ref, cand = _onehot(original, 3), _onehot(candidate, 3)
    assert accuracy(y, cand["logits"]) > accuracy(y, ref["logits"])
    one_number = evaluate_candidate(cand, ref, Budget.parse("1pt", "accuracy"), targets=y,
                                    metric=_metric)
    assert one_number.within_budget and one_number.drop < 0
    ev = evaluate_candidate(cand, ref, Budget.from_options("1pt", headline="accuracy"),
                            targets=y, metric=_metric)
    assert not ev.within_budget
    assert ev.excluded_by == ["macro_f1", "logits.top1", "class_recall"]
    recall = next(c for c in ev.checks if c.metric == "class_recall")
    assert recall.drop == pytest.approx(1.0) and recall.note.startswith("class 2 (40 samples)")
    assert ev.drop == pytest.approx(accuracy(y, ref["logits"]) - accuracy(y, cand["logits"]))
    assert ev.budget_used > 1.0


@pytest.mark.parametrize(("flips", "ok"), [(1, True), (2, False)])
def test_a_small_class_may_lose_one_sample_not_two(flips: int, ok: bool) -> None:
    y = _labels([500, 500, 10])  # 10 samples: one flip is 10 points of recall
    candidate = y.copy()
    candidate[1000:1000 + flips] = 0
    ev = evaluate_candidate(_onehot(candidate, 3), _onehot(y, 3),
                            Budget.from_options("5pt", headline="accuracy", min_agreement=0),
                            targets=y, metric=_metric)
    recall = next(c for c in ev.checks if c.metric == "class_recall")
    assert recall.ok is ok and recall.allowed == pytest.approx(0.1)


def test_agreement_needs_no_labels() -> None:
    rng = np.random.default_rng(0)
    ref = {"logits": rng.normal(size=(200, 5)).astype(np.float32)}
    cand = {"logits": ref["logits"].copy()}
    cand["logits"][:6] = -cand["logits"][:6]  # 6 of 200 predictions change: 97% agreement
    budget = Budget.from_options(None, headline="logits.cosine")
    ev = evaluate_candidate(cand, ref, budget, targets=NO_LABELS, metric=None)
    top1 = next(c for c in ev.checks if c.metric == "logits.top1")
    assert top1.value == pytest.approx(0.97) and not top1.ok
    assert "class_recall" not in [c.metric for c in ev.checks]


def test_relative_limits_scale_with_the_original() -> None:
    assert Limit.parse("1%", "pr_auc").allowed(0.8) == pytest.approx(0.008)
    assert Limit.parse("1pt", "pr_auc").allowed(0.8) == pytest.approx(0.01)


def test_agreement_on_varied_text_uses_the_same_floor() -> None:
    """Template text flatters: a candidate that agrees on 99% of validation sentences but on
    90% of their varied forms is over budget."""
    rng = np.random.default_rng(1)
    ref = {"logits": rng.normal(size=(300, 4)).astype(np.float32)}
    varied_ref = {"logits": rng.normal(size=(300, 4)).astype(np.float32)}
    cand = {"logits": ref["logits"].copy()}
    cand["logits"][:3] = -cand["logits"][:3]                      # 99% agreement
    varied_cand = {"logits": varied_ref["logits"].copy()}
    varied_cand["logits"][:30] = -varied_cand["logits"][:30]      # 90% agreement
    # (the flipped rows' cosine is -1: this test is about agreement, so cosine may drop)
    budget = Budget.from_options("logits.cosine=200pt", headline="logits.cosine",
                                 min_agreement=0.97)
    resolved = budget.resolve([], ref, varied=True)
    varied = next(lim for lim in resolved.limits if lim.metric == "logits.top1@varied")
    assert varied.max_drop == pytest.approx(0.03)
    assert "on varied text at least 0.97" in varied.describe()
    ev = evaluate_candidate(cand, ref, budget, varied=(varied_ref, varied_cand))
    assert ev.excluded_by == ["logits.top1@varied"]
    check = next(c for c in ev.checks if c.metric == "logits.top1@varied")
    assert check.value == pytest.approx(0.9)
    # Resolved with varied text but judged on data without it (a split with no sentences):
    # the other limits are still judged.
    rest = evaluate_candidate(cand, ref, resolved)
    assert "logits.top1@varied" not in [c.metric for c in rest.checks] and rest.within_budget
    # Without varied text (not a text task) the guard is not part of the budget at all.
    plain = evaluate_candidate(cand, ref, budget)
    assert "logits.top1@varied" not in [c.metric for c in plain.checks] and plain.within_budget
    off = Budget.from_options(None, headline="logits.cosine", min_agreement=0.0)
    assert not [lim for lim in off.resolve([], ref, varied=True).limits if "top1" in lim.metric]
