"""advise: the recommendation is the measured best among candidates, with reasons."""

from __future__ import annotations

import pytest

import rtinfer
from rtinfer.models import ImportedModel


def test_latency_recommendation_is_the_lowest_median(cnn: ImportedModel) -> None:
    advice = rtinfer.advise(cnn, engines=["onnxruntime", "openvino", "torch"], threads=[1],
                            window_s=0.05)
    candidates = advice["candidates"]
    assert {c["engine"] for c in candidates} == {"onnxruntime", "openvino", "torch"}
    best = advice["recommendation"]
    assert best["p50_ms"] == min(c["p50_ms"] for c in candidates)
    assert advice["reasons"][0].startswith(f"Measured: {best['engine']} with 1 thread(s)")
    assert any(r.startswith("Hardware:") for r in advice["reasons"])
    assert any(r.startswith("Format: a PyTorch model") for r in advice["reasons"])


def test_throughput_goal_ranks_by_samples_per_second(cnn: ImportedModel) -> None:
    advice = rtinfer.advise(cnn, goal="throughput", engines=["onnxruntime", "openvino"],
                            threads=[1], batch=8, window_s=0.05)
    best = advice["recommendation"]
    assert best["batch"] == 8
    assert best["samples_per_s"] == max(c["samples_per_s"] for c in advice["candidates"])


def test_unreachable_objective_is_said_plainly(cnn: ImportedModel) -> None:
    advice = rtinfer.advise(cnn, engines=["onnxruntime"], threads=[1], slo_ms=1e-6,
                            window_s=0.02)
    assert advice["meets_slo"] is False
    assert not advice["candidates"][0]["meets_slo"]
    assert any("no candidate met it" in r for r in advice["reasons"])


def test_engines_that_cannot_run_the_model_are_skipped_with_the_reason(
        cnn: ImportedModel) -> None:
    onnx_only = rtinfer.import_model(cnn.path)
    advice = rtinfer.advise(onnx_only, engines=["onnxruntime", "torch"], threads=[1],
                            window_s=0.02)
    assert [c["engine"] for c in advice["candidates"]] == ["onnxruntime"]
    assert "no PyTorch source" in advice["skipped"]["torch"]


def test_goal_is_checked(cnn: ImportedModel) -> None:
    with pytest.raises(ValueError, match="goal must be one of"):
        rtinfer.advise(cnn, goal="speed")
