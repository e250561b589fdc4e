"""Perception kit: a small ResNet classifying real handwritten digits, any image size.

The data are scikit-learn's bundled digits (1,797 real 8x8 grayscale scans of handwritten
digits, UCI ML repository), upscaled bilinearly to 32x32 and replicated to 3 channels — a
stand-in for a camera crop: the task is easy, the network shape is not a toy. The network is
ResNet-style (3x3 conv + batch norm + ReLU stem with stride 2, three residual stages of widths
32/64/128, global average pooling, linear head) and fully convolutional, so the same weights run
at 3x32x32 (the training size) and 3x224x224 (the size a vehicle camera pipeline would feed):
about 1.2 GFLOP per frame at 224x224. Objective: p99 <= 30 ms per frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtinfer._resample import resize
from rtinfer.kits.base import (
    KitRecipe,
    Progress,
    Split,
    record_models,
    save_splits,
    stratified_split,
    torch_threads,
)
from rtinfer.metrics import accuracy, macro_f1

__all__ = ["RECIPE", "network", "resize_bilinear", "top1"]

IMAGE_SIZE = 32
WIDTHS = (32, 64, 128)
_FRACTIONS = {"train": 0.6, "calibration": 0.1, "validation": 0.1, "test": 0.2}


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) -> (N, size, size) by separable bilinear interpolation (align-corners off)."""
    return resize(np.asarray(images, dtype=np.float32), {1: size, 2: size})


def preprocess(meta: Mapping[str, Any], raw_items: Sequence[Any]) -> dict[str, np.ndarray]:
    """Grayscale images in [0, 1] of any size, (H, W) each -> ``image`` (N, 3, 32, 32)."""
    if len(raw_items) == 0:
        raise ValueError("preprocess needs at least one image")
    images = [np.asarray(im, dtype=np.float32) for im in raw_items]
    if any(im.ndim != 2 for im in images):
        raise ValueError("each raw image must be a 2-D grayscale array (H, W) in [0, 1]")
    resized = np.stack([resize_bilinear(im[None], IMAGE_SIZE)[0] for im in images])
    x = (resized - meta["pixel_mean"]) / meta["pixel_std"]            # (N, 32, 32)
    return {"image": np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))}  # (N, 3, 32, 32)


def top1(targets: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Top-1 accuracy (the headline) and macro-F1 of ``logits``: what the kit's task file
    names (``metric = "rtinfer.kits.perception:top1"``)."""
    logits = outputs["logits"]
    return {"top1": accuracy(targets, logits),
            "macro_f1": macro_f1(targets, logits)}


def evaluate(meta: Mapping[str, Any], targets: np.ndarray,
             outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    return top1(targets, outputs)


def network() -> Any:
    """A freshly initialised DigitResNet (the artifact's torch factory)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        """Two 3x3 convs with batch norm and a residual connection (ResNet's BasicBlock)."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = (nn.Sequential() if stride == 1 and cin == cout else
                             nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class DigitResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w1, w2, w3 = WIDTHS
            self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, 2, 1, bias=False),
                                      nn.BatchNorm2d(w1), nn.ReLU())
            self.stages = nn.Sequential(Block(w1, w1, 1), Block(w1, w2, 2), Block(w2, w3, 2))
            self.head = nn.Linear(w3, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.stages(self.stem(image))      # (B, 128, H/8, W/8)
            return self.head(x.mean(dim=(2, 3)))   # (B, 10)

    return DigitResNet()


def build(folder: Path, size: str, say: Progress) -> dict[str, Any]:
    import torch
    from sklearn.datasets import load_digits

    from rtinfer.deploy.artifact import save_artifact
    from rtinfer.models import import_model

    digits = load_digits()
    raw = (digits.images / 16.0).astype(np.float32)        # (1797, 8, 8) in [0, 1]
    targets = digits.target.astype(np.int64)
    idx = stratified_split(targets, _FRACTIONS, seed=0)
    up = resize_bilinear(raw, IMAGE_SIZE)
    meta: dict[str, Any] = {
        "labels": [str(d) for d in range(10)],
        "pixel_mean": float(up[idx["train"]].mean()),
        "pixel_std": float(up[idx["train"]].std()),
        "data": "scikit-learn digits (1,797 real 8x8 handwritten digit scans), upscaled to "
                "32x32 bilinear, 3 channels",
        "splits": {k: len(v) for k, v in idx.items()},
    }
    splits = {name: Split(inputs=preprocess(meta, list(raw[rows])), targets=targets[rows],
                          raw={"image": raw[rows]}) for name, rows in idx.items()}
    save_splits(folder, splits)

    epochs = 25 if size == "full" else 8
    torch.manual_seed(0)
    net = network()
    x = torch.from_numpy(splits["train"].inputs["image"])
    y = torch.from_numpy(splits["train"].targets)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs *
                                                ((len(x) + 63) // 64))
    gen = torch.Generator().manual_seed(0)
    with torch_threads(1):
        net.train()
        for epoch in range(epochs):
            say(f"perception: training epoch {epoch + 1}/{epochs}")
            for batch in torch.randperm(len(x), generator=gen).split(64):
                # Small random shifts: the digits are centred, camera crops are not.
                shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
                xb = torch.roll(x[batch], shifts=shift, dims=(2, 3))
                loss = torch.nn.functional.cross_entropy(net(xb), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
    say("perception: exporting and verifying")
    example = torch.from_numpy(splits["validation"].inputs["image"][:4])
    model = import_model(net, (example,), input_names=["image"], output_names=["logits"],
                         dynamic_axes={"image": {2: "height", 3: "width"}})
    art = save_artifact(model, folder / "repo", "perception",
                        torch_factory="rtinfer.kits.perception:network")
    with torch.no_grad():
        test_logits = net(torch.from_numpy(splits["test"].inputs["image"])).numpy()
    record_models(meta, folder, {"perception": art})
    meta["quality"] = {"perception": evaluate(meta, splits["test"].targets,
                                              {"logits": test_logits})}
    return meta


def beyond(kit: Any) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """The test scans moved one source pixel right and down and at 80% contrast: a camera
    crop that is a little off and under-exposed (the network never saw either)."""
    test = kit.split("test")
    moved = np.zeros_like(test.raw["image"])                           # (N, 8, 8)
    moved[:, 1:, 1:] = test.raw["image"][:, :-1, :-1] * 0.8
    return (f"{len(moved)} test scans shifted one pixel, at 80% contrast",
            preprocess(kit.meta, list(moved)), test.targets)


RECIPE = KitRecipe(
    name="perception",
    description="ResNet-style CNN on real handwritten digits (scikit-learn), any image size",
    task="multiclass",
    metric="top1",
    objective_p99_ms=30.0,
    version=2,
    build=build,
    preprocess=preprocess,
    evaluate=evaluate,
    packages=("scikit-learn",),
    beyond=beyond,
    task_metric="rtinfer.kits.perception:top1",
)
