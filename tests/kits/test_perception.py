"""Perception kit: real digits, a ResNet-style CNN, any input size, every engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import rtinfer
from rtinfer import kits
from rtinfer.kits import Kit


def test_quality_floor_and_splits(perception_kit: Kit) -> None:
    assert perception_kit.quality["perception"]["top1"] >= 0.95
    assert perception_kit.labels == [str(d) for d in range(10)]
    sizes = perception_kit.meta["splits"]
    assert sum(sizes.values()) == 1797 and sizes["test"] > 300


def test_raw_images_preprocess_to_the_stored_inputs(perception_kit: Kit) -> None:
    test = perception_kit.split("test")
    np.testing.assert_allclose(perception_kit.preprocess(list(test.raw["image"][:20]))["image"],
                               test.inputs["image"][:20], atol=1e-5)
    with pytest.raises(ValueError, match="2-D grayscale"):
        perception_kit.preprocess([np.zeros((3, 8, 8))])


def test_classifies_digits_it_never_trained_on(perception_kit: Kit) -> None:
    # A 16x16 rendition of test digits (a different resolution than training's 8x8 source).
    digits = load_digits()
    test_rows = perception_kit.split("test").targets[:40]
    images = [np.kron(digits.images[i] / 16.0, np.ones((2, 2))) for i in range(40)]
    with rtinfer.load(perception_kit.model_path, threads=1) as s:
        logits = s.run(perception_kit.preprocess(images))["logits"]
    assert (logits.argmax(1) == digits.target[:40]).mean() >= 0.9
    assert len(test_rows) == 40


@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_same_outputs_on_every_engine_at_224(perception_kit: Kit, engine: str) -> None:
    x = {"image": np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)}
    with rtinfer.load(perception_kit.model_path, "onnxruntime", threads=2) as ref, \
            rtinfer.load(perception_kit.model_path, engine, threads=2) as s:
        np.testing.assert_allclose(s.run(x)["logits"], ref.run(x)["logits"], atol=1e-4)


def test_unknown_kit_and_unbuilt_kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTINFER_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown kit 'radar'; choose one of"):
        kits.load("radar")
    with pytest.raises(FileNotFoundError, match="rtinfer kits build perception"):
        kits.load("perception", size="full", build=False)
