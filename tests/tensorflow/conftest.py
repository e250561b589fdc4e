"""A Keras CNN trained on scikit-learn's digits (8x8 handwritten digits that ship with it), for
quantization; the untrained CNN and MLP (for parity) are in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs rtinfer[tensorflow] (make test installs it)")


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return {"x": (x[order] / 16.0).reshape(-1, 8, 8, 1).astype(np.float32),
            "y": y[order].astype(np.int64)}


@pytest.fixture(scope="session")
def digits_keras(digits: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    """A .keras file of a CNN trained on the first 1,200 digits (~0.97 on the rest)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="digits")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits["x"][:1200], digits["y"][:1200], epochs=15, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("keras") / "digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def digits_npz(digits: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 597 digits not trained on, as ``rtinfer quantize --data`` takes them."""
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, pixels=digits["x"][1200:], labels=digits["y"][1200:])
    return path
