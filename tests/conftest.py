"""Shared fixtures: small real models built here, and the real MiniLM (marked slow)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtinfer
from rtinfer.models import ImportedModel


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Exports are cached under RTINFER_CACHE; keep that inside pytest's temp folder, one
    cache shared by the run's worker processes (``make test`` runs two: pytest-xdist)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "rtinfer-cache"
        shared.mkdir(exist_ok=True)
        os.environ["RTINFER_CACHE"] = str(shared)
    else:
        os.environ["RTINFER_CACHE"] = str(tmp_path_factory.mktemp("rtinfer-cache"))


@contextmanager
def _one_builder(name: str) -> Iterator[None]:
    """One worker builds a kit; the others wait for it and load the build."""
    import fcntl

    lock = Path(os.environ["RTINFER_CACHE"]) / f".{name}.lock"
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _small_cnn():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    torch.manual_seed(0)

    class SmallCNN(nn.Module):
        """Conv-BN-ReLU x2, global pool, linear: 10 classes from 3x32x32 images."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
            )
            self.head = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)           # (B, 16, 16, 16)
            x = x.mean(dim=(2, 3))         # (B, 16)
            return self.head(x)            # (B, 10)

    return SmallCNN().eval()


@pytest.fixture(scope="session")
def cnn_module():  # type: ignore[no-untyped-def]
    return _small_cnn()


@pytest.fixture(scope="session")
def cnn(cnn_module, tmp_path_factory: pytest.TempPathFactory) -> ImportedModel:  # type: ignore[no-untyped-def]
    import torch

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = tmp_path_factory.mktemp("cnn")
    return rtinfer.import_model(cnn_module, (x,), input_names=["image"], output_names=["logits"],
                                out_dir=out)


@pytest.fixture(scope="session")
def breast_cancer():  # type: ignore[no-untyped-def]
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=0)


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    from rtinfer.models import minilm_folder

    return minilm_folder()


@pytest.fixture(scope="session")
def minilm(minilm_folder: Path) -> ImportedModel:
    with _one_builder("minilm"):  # one worker exports, the other reads the cached export
        return rtinfer.import_model(minilm_folder)


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return [
        "turn off the lights in the kitchen",
        "my card was charged twice for the same order",
        "what is the weather like in Paris tomorrow?",
    ]


@pytest.fixture(scope="session")
def fraud_kit():  # type: ignore[no-untyped-def]
    """Kits are built at reduced size once per session, inside pytest's temp cache."""
    from rtinfer import kits

    with _one_builder("fraud"):
        return kits.load("fraud", size="small")


@pytest.fixture(scope="session")
def perception_kit():  # type: ignore[no-untyped-def]
    from rtinfer import kits

    with _one_builder("perception"):
        return kits.load("perception", size="small")


@pytest.fixture(scope="session")
def intent_kit():  # type: ignore[no-untyped-def]
    from rtinfer import kits

    with _one_builder("minilm"), _one_builder("intent"):  # its build exports MiniLM too
        return kits.load("intent", size="small")


@pytest.fixture(scope="session")
def intent_zh_kit():  # type: ignore[no-untyped-def]
    from rtinfer import kits

    with _one_builder("intent-zh"):
        return kits.load("intent-zh", size="small")


# Keras models (TensorFlow is imported only by the tests that use them).
@pytest.fixture(scope="session")
def keras_cnn() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="cnn")


@pytest.fixture(scope="session")
def keras_mlp() -> Any:
    """Two named inputs, two named outputs: names and order survive every form."""
    import keras

    keras.utils.set_random_seed(1)
    amount, merchant = keras.Input((4,), name="amount"), keras.Input((3,), name="merchant")
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Concatenate()([amount, merchant]))
    return keras.Model([amount, merchant], {"score": keras.layers.Dense(1)(h),
                                            "classes": keras.layers.Dense(2)(h)}, name="mlp")
