"""The user's own model and data, built here: a fully connected network trained on
scikit-learn's bundled handwritten digits (8x8 images, 10 classes), its weights in safetensors,
its data in CSV files, and the task file naming them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

NET = '''
import torch


class DigitsNet(torch.nn.Module):
    def __init__(self, hidden: int = 96) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def forward(self, pixels):
        return self.body(pixels)


def build(hidden: int = 96) -> DigitsNet:
    return DigitsNet(hidden)
'''

TASK = '''
name = "digits"
metric = "accuracy"

[model]
torch = "{module}:build"
kwargs = {{ hidden = 96 }}
weights = "net.safetensors"

[data]
train = "train.csv"
validation = "validation.csv"
test = "test.csv"
label = "digit"
'''


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"p{i}" for i in range(x.shape[1])] + ["digit"])
        for row, label in zip(x, y, strict=True):
            w.writerow([f"{v:.4f}" for v in row] + [int(label)])


def _digits_task(folder: Path, module: str) -> Path:
    """A trained MLP (safetensors), CSV splits and the task file naming them."""
    import safetensors.torch
    import torch
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(NET)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    parts = {"train": order[:1100], "validation": order[1100:1450], "test": order[1450:]}
    for name, idx in parts.items():
        _write_csv(folder / f"{name}.csv", x[idx], y[idx])
    torch.manual_seed(0)
    ns: dict[str, Any] = {}
    exec(compile(NET, "net", "exec"), ns)  # the same class the task file's entry point builds
    net = ns["build"](96)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x[parts["train"]]), torch.from_numpy(y[parts["train"]])
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    safetensors.torch.save_file(net.state_dict(), str(folder / "net.safetensors"))
    task = folder / "task.toml"
    task.write_text(TASK.format(module=module))
    return task


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The digits task file, one per test module (its entry point's module is named after
    the test module, so two in one process never share an imported module)."""
    module = "digits_net_" + request.module.__name__.rsplit(".", 1)[-1]
    return _digits_task(tmp_path_factory.mktemp("digits"), module)


@pytest.fixture
def write_csv() -> Any:
    """Write (features, labels) as a CSV with columns p0, p1, ... and digit."""
    return _write_csv
