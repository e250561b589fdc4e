"""rtinfer.metrics agrees with scikit-learn's functions of the same name."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from rtinfer.metrics import accuracy, average_precision, macro_f1, recall_at_fpr, roc_auc


@pytest.fixture
def binary() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.05).astype(int)
    scores = np.round(rng.random(2000) + 0.6 * y, 2)  # rounded: ties must be handled
    return y, scores


def test_roc_auc_matches_sklearn(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = binary
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_average_precision_matches_sklearn(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = binary
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s),
                                                    abs=1e-12)


def test_two_column_scores_use_the_positive_column(binary: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = binary
    two = np.stack([1 - s, s], axis=1)
    assert roc_auc(y, two) == roc_auc(y, s)


def test_multiclass_accuracy_and_macro_f1() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 500)
    logits = rng.standard_normal((500, 5)) + 2 * np.eye(5)[y]
    pred = logits.argmax(1)
    assert accuracy(y, logits) == pytest.approx(skm.accuracy_score(y, pred))
    assert macro_f1(y, logits) == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_recall_at_fpr_by_hand() -> None:
    y = np.array([0] * 100 + [1] * 4)
    scores = np.r_[np.linspace(0, 0.9, 100), [0.95, 0.5, 0.99, 0.1]]
    # 1% of 100 negatives = 1 may be flagged: threshold above the 2nd-highest negative (0.89…),
    # so positives 0.95 and 0.99 are caught: recall 2/4.
    assert recall_at_fpr(y, scores, 0.01) == 0.5
    assert recall_at_fpr(y, scores, 1.0) == 1.0
    with pytest.raises(ValueError, match="fpr must be within"):
        recall_at_fpr(y, scores, 2)


def test_degenerate_labels_are_errors() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="at least one positive"):
        average_precision([0, 0], [0.2, 0.3])
