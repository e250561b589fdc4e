"""Task metrics, in plain numpy so that evaluating a model needs no scikit-learn.

    accuracy([0, 1, 1], [[.9, .1], [.2, .8], [.6, .4]])   # 2/3: scores are argmax-ed
    roc_auc([0, 0, 1, 1], [.1, .4, .35, .8])               # 0.75
    average_precision([0, 0, 1, 1], [.1, .4, .35, .8])     # 0.833… (PR-AUC, step-wise)
    recall_at_fpr(y, scores, fpr=0.01)                     # share of positives caught while
                                                           # flagging at most 1% of negatives

Each agrees with scikit-learn's function of the same name (tested).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["accuracy", "average_precision", "macro_f1", "recall_at_fpr", "roc_auc"]


def _predictions(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores)
    return s.argmax(axis=1) if s.ndim == 2 else s.astype(np.int64)


def accuracy(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Share of rows whose argmax (or given label) equals the true label."""
    y = np.asarray(y_true)
    return float(np.mean(_predictions(scores) == y)) if y.size else float("nan")


def macro_f1(y_true: ArrayLike, scores: ArrayLike, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or predicted."""
    y = np.asarray(y_true).astype(np.int64)
    pred = _predictions(scores)
    classes = np.union1d(np.unique(y), np.unique(pred)) if n_classes is None else np.arange(
        n_classes)
    f1 = []
    for c in classes:
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        denom = 2 * tp + fp + fn
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def _binary_scores(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return s[:, 1] if s.ndim == 2 else s.ravel()


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties 1/2."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = _binary_scores(scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positive and negative labels")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    # Ties share their average rank (the Mann-Whitney U convention).
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """PR-AUC as average precision: sum over thresholds of (recall step x precision)."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = _binary_scores(scores)
    if not y.any():
        raise ValueError("average precision needs at least one positive label")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Evaluate only at the last index of each run of equal scores (a threshold).
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_fpr(y_true: ArrayLike, scores: ArrayLike, fpr: float = 0.01) -> float:
    """Highest recall reachable with a threshold that flags at most ``fpr`` of negatives."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be within [0, 1], got {fpr}")
    y = np.asarray(y_true).astype(bool).ravel()
    s = _binary_scores(scores)
    neg = np.sort(s[~y])[::-1]
    allowed = int(np.floor(fpr * len(neg)))
    # Flag scores strictly above the (allowed+1)-th highest negative score.
    threshold = neg[allowed] if allowed < len(neg) else -np.inf
    return float(np.mean(s[y] > threshold)) if y.any() else float("nan")
