"""Quantization-aware fine-tuning (QAT): teach the float weights to survive int8.

    tuned = finetune(model, Quantize(), QAT(steps=200), train=kit.split("train").inputs,
                     calibration=kit.split("calibration").inputs)
    q = quantize(tuned, Quantize(), calibration)        # the usual static QDQ, now on QAT weights

Post-training quantization rounds weights and activations that were never trained to be
rounded. QAT fine-tunes the model's own PyTorch module for a bounded number of steps while every
``Linear``/``Conv`` sees the int8 it will get on the target, simulated in float ("fake
quantization", with a straight-through gradient):

- weights: symmetric int8, scale = max|w| / 127 per output channel (or per tensor), exactly
  ONNX Runtime's symmetric form (a weight row with max|w| = 0.254 gets scale 0.002, so 0.1013
  becomes round(50.65) = 51 → 0.102);
- each output channel's weights are multiplied by a learned gain (exp of a log-gain that starts
  at 0, folded into the exported weights): Adam moves every parameter by about ``lr`` a step,
  so a channel whose weights are 100x the others' (an outlier that sets a per-tensor weight
  scale or an activation range) would take thousands of steps to shrink weight by weight; the
  gain rescales the whole channel by about ``lr`` *relative* a step;
- inputs: the ``Quantize`` config's activation type, per tensor, over the min/max range seen on
  the calibration data (widened to include 0) — what MinMax calibration will find; the ranges
  are re-measured every ``QAT.recalibrate`` steps as the weights move.

The loss is distillation from the untouched float model: for every float output, the mean
squared error to the float output divided by that output's variance (so logits and unit
embeddings weigh alike). No labels are needed; the target is fidelity to the float model, which
is what the accuracy budget compares against.

The export stays the one rtinfer trusts: the fine-tuned *float* weights are exported to ONNX
(verified against PyTorch) and then quantized by the usual post-training path, which now finds
weights and ranges the fine-tune already adapted to. The result is an ordinary QDQ ONNX file
that ONNX Runtime and OpenVINO both run as int8. Not simulated: MatMuls between two activations
(attention scores), which ONNX Runtime quantizes too; their inputs are not trained on.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rtinfer._deps import require
from rtinfer._progress import Progress
from rtinfer.errors import ExportError
from rtinfer.models.imported import ImportedModel, Source
from rtinfer.optimize.passes.quantize import Feeds, Quantize

__all__ = ["QAT", "finetune"]

CONFIG_VERSION = 1


@dataclass(frozen=True)
class QAT:
    """How to fine-tune: ``QAT(steps=200, lr=1e-5, batch=32)``; a pass in a recipe."""

    steps: int = 200
    lr: float = 2e-5
    batch: int = 32
    recalibrate: int = 50   # re-measure activation ranges every this many steps
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "recalibrate"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"QAT.{name} must be an int >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"QAT.lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"pass": "qat", "version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QAT:
        if data.get("pass") != "qat" or data.get("version") != CONFIG_VERSION:
            raise ValueError(f"not a version-{CONFIG_VERSION} qat pass: {dict(data)}")
        return cls(**{k: v for k, v in data.items() if k not in ("pass", "version")})

    def describe(self) -> str:
        return f"QAT fine-tune ({self.steps} steps, lr {self.lr:g}, batch {self.batch})"


def finetune(model: ImportedModel, config: Quantize, qat: QAT, train: Feeds,
             calibration: Feeds, *, threads: int | None = None,
             progress: Progress | None = None) -> ImportedModel:
    """Fine-tune ``model``'s PyTorch module under simulated ``config`` int8; export to ONNX.

    ``train`` holds inputs only (arrays named after the model's inputs, leading sample axis);
    the float model's own outputs are the targets. Returns a float ONNX model (QAT weights) to
    quantize with ``config``; its source names the fine-tune.
    """
    torch = require("torch", "Quantization-aware fine-tuning")
    from rtinfer.models import import_model
    from rtinfer.models.torch_export import state_hash

    say = progress or (lambda _msg: None)
    teacher = model.load_torch()
    if teacher is None:
        raise ExportError(
            f"QAT needs the PyTorch module of {model.source.description}, and this model has "
            "none: import it from PyTorch (rtinfer.import_model(module, example_inputs)) or "
            "use a kit, whose artifacts carry their module; or turn QAT off (--qat-steps 0)"
        )
    if config.method != "static":
        raise ValueError("QAT simulates static int8; use Quantize(method='static')")
    missing = [n for n in model.spec.input_names if n not in train]
    if missing:
        raise ValueError(f"QAT training data lacks input(s) {missing}; it has {sorted(train)}")
    teacher.eval()
    student = copy.deepcopy(teacher)
    student.eval()  # batch norm keeps its running statistics (folded into conv on export)
    names = model.spec.input_names
    kwargs = model.torch_kwargs

    def call(net: Any, feeds: Mapping[str, Any]) -> list[Any]:
        tensors = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names}
        out = net(**tensors) if kwargs else net(*(tensors[n] for n in names))
        return _float_outputs(torch, out)

    n_threads = threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        layers = _FakeQuant(torch, student, config)
        say(f"QAT: simulating int8 in {len(layers.modules)} Linear/Conv layer(s)")
        # The samples ONNX Runtime's calibration will see (config.calib_samples of them).
        count = min(config.calib_samples, len(next(iter(calibration.values()))))
        calib = [{k: v[i:min(i + qat.batch, count)] for k, v in calibration.items()}
                 for i in range(0, count, qat.batch)]
        n = len(train[names[0]])
        gen = np.random.default_rng(qat.seed)
        torch.manual_seed(qat.seed)
        opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=qat.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=qat.steps)
        for step in range(qat.steps):
            if step % qat.recalibrate == 0:
                layers.calibrate(lambda: [call(student, b) for b in calib])
            rows = np.sort(gen.choice(n, size=min(qat.batch, n), replace=False))
            feeds = _trim_padding({k: train[k][rows] for k in names})
            with torch.no_grad():
                target = call(teacher, feeds)
            got = call(student, feeds)
            loss = sum(((g - t) ** 2).mean() / (t.var() + 1e-8)
                       for g, t in zip(got, target, strict=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % 25 == 0 or step == qat.steps - 1:
                value = float(loss.detach())
                say(f"QAT step {step + 1}/{qat.steps}: distillation loss {value:.3g}")
        layers.remove()
    finally:
        torch.set_num_threads(before)

    say("QAT: exporting the fine-tuned weights")
    example = {k: np.ascontiguousarray(v[:2]) for k, v in calibration.items() if k in names}
    axes = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and i > 0}
            for t in model.spec.inputs}
    example_arg: Any = example if kwargs else tuple(example[n] for n in names)
    tuned = import_model(student, example_arg, input_names=names,
                         output_names=model.spec.output_names,
                         dynamic_axes={k: v for k, v in axes.items() if v})
    tuned.source = Source(
        "torch", f"{qat.describe()} of {model.source.description}", state_hash(student))
    return tuned


def _trim_padding(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut token inputs to the batch's longest sentence when an ``attention_mask`` says where
    the padding is: a batch of 12-token sentences padded to 64 trains ~5x faster, same result."""
    mask = feeds.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return feeds
    used = int(np.max(np.nonzero(mask.any(0))[0], initial=0)) + 1
    return {k: v[:, :used] if v.shape == mask.shape else v for k, v in feeds.items()}


def _float_outputs(torch: Any, out: Any) -> list[Any]:
    """The float tensors of a module's output (a tensor, a tuple/list or a dict), in order."""
    if isinstance(out, torch.Tensor):
        items = [out]
    elif isinstance(out, Mapping):
        items = list(out.values())
    else:
        items = list(out)
    return [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]


class _FakeQuant:
    """Fake-quantizes the weight and the input of every Linear/Conv of ``net`` (in place)."""

    def __init__(self, torch: Any, net: Any, config: Quantize) -> None:
        from torch.nn.utils import parametrize

        self._torch, self._parametrize = torch, parametrize
        self.per_channel = config.per_channel
        # (low, high) of the integer grid: uint8 asymmetric or int8 symmetric activations.
        self.unsigned = config.activation_type == "uint8"
        kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
        self.modules = [m for m in net.modules() if isinstance(m, kinds)]
        self.ranges: dict[int, tuple[float, float]] = {}
        self._observing = False
        self._hooks = []
        for i, m in enumerate(self.modules):
            parametrize.register_parametrization(
                m, "weight", _WeightQuant(torch, self.per_channel, m.weight))
            self._hooks.append(m.register_forward_pre_hook(self._input_hook(i)))

    def _input_hook(self, i: int) -> Any:
        torch = self._torch

        def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = args[0]
            if self._observing:
                lo, hi = float(x.min()), float(x.max())
                old = self.ranges.get(i, (lo, hi))
                self.ranges[i] = (min(old[0], lo), max(old[1], hi))
                return None
            if i not in self.ranges:
                return None
            c_lo, c_hi = self.ranges[i]
            # The range's value is the calibrated one (what deployment will use); its gradient
            # is the batch extreme's, so the fine-tune can shrink an outlier that stretches the
            # range and coarsens every other value's step (the transformer failure).
            lo = _tied(torch, x.min().clamp(max=0.0), min(c_lo, 0.0))
            hi = _tied(torch, x.max().clamp(min=0.0), max(c_hi, 0.0))
            if self.unsigned:
                scale = (hi - lo).clamp(min=1e-8) / 255
                zero = torch.clamp(torch.round(-lo.detach() / scale.detach()), 0, 255)
                return (_fake_quant(torch, x, scale, zero, 0, 255), *args[1:])
            scale = torch.maximum(-lo, hi).clamp(min=1e-8) / 127
            return (_fake_quant(torch, x, scale, 0.0, -127, 127), *args[1:])

        return hook

    def calibrate(self, run: Any) -> None:
        """Min/max of every layer's input over the calibration batches, in float."""
        self.ranges, self._observing = {}, True
        try:
            with self._torch.no_grad():
                run()
        finally:
            self._observing = False

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        for m in self.modules:  # keep the trained float weight (times its gain), drop the rest
            weight = m.parametrizations.weight
            with self._torch.no_grad():
                weight.original.copy_(weight[0].gained(weight.original))
            self._parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


def _tied(torch: Any, batch_value: Any, value: float) -> Any:
    """``value``, carrying the gradient of ``batch_value`` scaled to it."""
    if float(batch_value.detach()) == 0.0:
        return torch.tensor(value)
    return batch_value * (value / batch_value.detach())


def _fake_quant(torch: Any, x: Any, scale: Any, zero: Any, low: int, high: int) -> Any:
    """(clamp(round(x / scale) + zero, low, high) - zero) * scale, rounding straight-through:
    gradients reach x inside the range and reach the scale everywhere (as in LSQ)."""
    v = x / scale + zero
    q = torch.clamp(v + (torch.round(v) - v).detach(), low, high)
    return (q - zero) * scale


class _WeightQuant:
    """Parametrization: w -> symmetric int8 fake-quantized ``gain * w`` (per output channel or
    tensor), where ``gain`` = exp(a learned log-gain per output channel, starting at 0)."""

    def __new__(cls, torch: Any, per_channel: bool, weight: Any) -> Any:
        class WeightQuant(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                zeros = torch.zeros(len(weight), dtype=weight.dtype, device=weight.device)
                self.log_gain = torch.nn.Parameter(zeros, requires_grad=weight.requires_grad)

            def gained(self, w: Any) -> Any:
                return w * self.log_gain.exp().reshape(-1, *([1] * (w.dim() - 1)))

            def forward(self, w: Any) -> Any:
                w = self.gained(w)
                if per_channel:
                    amax = w.detach().abs().reshape(len(w), -1).amax(1).clamp(min=1e-8)
                    scale = (amax / 127).to(torch.float32)
                    zero = torch.zeros(len(w), dtype=torch.int32)
                    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)
                scale = float(w.detach().abs().max().clamp(min=1e-8)) / 127
                return torch.fake_quantize_per_tensor_affine(w, scale, 0, -127, 127)

        return WeightQuant()
