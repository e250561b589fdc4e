"""scikit-learn and XGBoost -> ONNX, checked against the estimator's own predictions."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import rtinfer


@pytest.mark.parametrize("make", [
    lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
    lambda: xgboost.XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1, random_state=0),
], ids=["sklearn-pipeline", "random-forest", "xgboost"])
def test_classifier_probabilities_match_the_estimator(make, breast_cancer) -> None:  # type: ignore[no-untyped-def]
    x_train, x_test, y_train, y_test = breast_cancer
    est = make().fit(x_train, y_train)
    model = rtinfer.import_model(est, example_inputs=x_train[:64])
    assert model.spec.inputs[0].shape == ("batch", 30)
    prob = next(t for t in model.spec.outputs if len(t.shape) == 2)
    with rtinfer.load(model, threads=1) as session:
        out = session.run({"input": x_test})
    np.testing.assert_allclose(out[prob.name], est.predict_proba(x_test), atol=1e-4)
    accuracy = (out[prob.name].argmax(1) == y_test).mean()
    assert accuracy > 0.9  # real data, real model: the conversion keeps it useful
    assert model.source.kind == ("xgboost" if "XGB" in type(est).__name__ else "sklearn")


def test_tabular_needs_example_rows() -> None:
    est = LogisticRegression().fit(np.eye(4, dtype=np.float32), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="needs example_inputs"):
        rtinfer.import_model(est)
    with pytest.raises(ValueError, match="non-empty 2-D array"):
        rtinfer.import_model(est, example_inputs=np.ones(4, np.float32))
