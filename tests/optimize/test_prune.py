"""Pruning: the seed's example equals torch.nn.utils.prune; structured pruning really shrinks
the model (CNN channels, transformer FFN neurons and heads) and keeps accuracy; activation
statistics remove the channels that are never active."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from rtinfer.kits.perception import network
from rtinfer.optimize import Prune, prune, prune_weights, sparsity_report
from rtinfer.optimize._torch_job import task_from
from rtinfer.optimize.passes.structured import prune_structured


def _digit_net() -> nn.Module:
    torch.manual_seed(0)
    return network().eval()


def test_seed_example_gives_exactly_torch_prune_weights() -> None:
    ours, theirs = _digit_net(), _digit_net()
    report = prune_weights(ours, Prune(amount=0.5, scope="layer", layers=("Conv2d",)))
    for m in theirs.modules():  # the seed: l1_unstructured at 50% on every Conv2d
        if isinstance(m, nn.Conv2d):
            tprune.l1_unstructured(m, "weight", amount=0.5)
            tprune.remove(m, "weight")
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == ref.keys()
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    assert not any(hasattr(m, "weight_mask") for m in ours.modules())  # masks made permanent
    convs = [r for r in report["layers"] if r["type"] == "Conv2d"]
    assert len(convs) == 9 and all(abs(r["sparsity"] - 0.5) < 1e-3 for r in convs)
    assert report["layers"][0]["layer"] == "stem.0"


def test_global_scope_and_threshold() -> None:
    net = _digit_net()
    ref = copy.deepcopy(net)
    prune_weights(net, Prune(amount=0.3))  # global over Conv2d + Linear
    layers = [(m, "weight") for m in ref.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    tprune.global_unstructured(layers, pruning_method=tprune.L1Unstructured, amount=0.3)
    for m, name in layers:
        tprune.remove(m, name)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 ref.state_dict().values(), strict=True))
    assert abs(sparsity_report(net)["sparsity"] - 0.3) < 1e-3

    net, before = _digit_net(), _digit_net()
    prune_weights(net, Prune(threshold=0.05))  # W' = W where |W| > 0.05, else 0
    w, w0 = net.stages[1].conv1.weight, before.stages[1].conv1.weight
    assert torch.equal(w, torch.where(w0.abs() > 0.05, w0, torch.zeros_like(w0)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "random"}, "Prune.method must be one of"),
    ({"amount": 1.0}, "strictly between 0 and 1"),
    ({"amount": 0.5, "threshold": 0.1}, "not both"),
    ({"threshold": 0.1, "structured": True}, "for channels give amount"),
    ({"method": "activation"}, "use Prune\\(method='activation', structured=True\\)"),
    ({"layers": ("LSTM",)}, "Prune.layers must name some of"),
    ({"steps": 0}, "Prune.steps must be >= 1"),
    ({"finetune_steps": 10}, "would regrow the zeroed weights"),
    ({"teacher_weight": 1.5}, "teacher_weight is a share between 0 and 1"),
])
def test_bad_settings_say_what_to_do(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Prune(**kwargs)


def test_config_round_trips_through_json() -> None:
    config = Prune(method="activation", structured=True, amount=0.4, statistic="zeros", steps=3,
                   teacher_weight=0.5, temperature=3.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["pass"] == "prune" and Prune.from_dict(data) == config
    assert "activation zeros" in config.describe()
    # A recipe written before fine-tuning learned from the original replays on labels alone.
    old = {**data, "version": 2}
    del old["teacher_weight"], old["temperature"]
    assert Prune.from_dict(old).teacher_weight == 0.0


def test_activation_statistics_remove_the_channels_that_never_fire() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    dead = [1, 5, 6, 9, 12, 13, 14, 15]
    with torch.no_grad():  # these channels are negative everywhere: zero after the ReLU
        net[0].weight[dead] = 0.0
        net[0].bias[dead] = -1.0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    split = ({"input": x}, y)
    task = task_from(net, data={"train": split, "calibration": split, "test": split})
    kept = net[0].weight.detach().clone()
    prune_structured(task, Prune(method="activation", structured=True, amount=0.5,
                                 statistic="zeros", scope="layer"), progress=lambda _m: None)
    assert net[0].out_channels == 8 and net[2].in_channels == 8
    alive = [c for c in range(16) if c not in dead]
    assert torch.equal(net[0].weight.detach(), kept[alive])  # exactly the live ones stayed
    assert net(torch.from_numpy(x)).shape == (64, 4)


@pytest.mark.slow
def test_structured_pruning_shrinks_the_perception_cnn_and_keeps_accuracy(
        perception_kit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = Prune(structured=True, amount=0.5, scope="layer", steps=2, finetune_steps=30,
                   batch_size=32, lr=2e-3)
    result = prune(kit=perception_kit, config=config, out=tmp_path, measure=False)
    rep = result.report
    widths = rep["structure"]["steps"][-1]["widths"]
    assert widths["stem.0"] == 16 and widths["stages.2.conv2"] == 64 and widths["head"] == 10
    assert rep["size"]["pruned"]["flops"] < 0.35 * rep["size"]["original"]["flops"]
    assert rep["size"]["pruned"]["onnx_bytes"] < 0.4 * rep["size"]["original"]["onnx_bytes"]
    held = rep["held_out"]
    assert held["pruned"]["top1"] >= held["original"]["top1"] - 0.03
    # Fine-tuned on the original's soft targets too, the pruned network keeps its behaviour on
    # scans shifted and dimmed, which no split holds (labels alone: 0.866 -> 0.763 here).
    beyond = held["beyond_split"]
    assert beyond["candidate"]["top1"] >= beyond["original"]["top1"] - 0.04
    assert rep["recipe"][0]["teacher_weight"] == 0.7
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["recipe"]["passes"][0]["structured"] is True
    assert manifest["measurements"]["accuracy"]["top1"] == held["pruned"]["top1"]
    # the export runs at another image size too (dynamic height/width kept)
    from rtinfer.engines import load

    with load(result.model, "onnxruntime", 1) as s:
        out = s.run({"image": np.zeros((1, 3, 64, 64), np.float32)})
    assert out["logits"].shape == (1, 10)


def _tiny_bert_classifier() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=32)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = BertModel(config)
            self.head = nn.Linear(32, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
            hidden = self.encoder(input_ids=input_ids,
                                  attention_mask=attention_mask).last_hidden_state
            pooled = hidden.mean(1)                                  # (B, 32)
            return {"logits": self.head(pooled), "sentence_embedding": pooled}

    return Classifier().eval()


def test_transformer_heads_and_ffn_neurons_are_removed() -> None:
    net = _tiny_bert_classifier()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 64, (32, 12))
    split = ({"input_ids": ids, "attention_mask": np.ones_like(ids)}, rng.integers(0, 3, 32))
    task = task_from(net, data={"train": split, "test": split})
    prune_structured(task, Prune(structured=True, amount=0.5, heads=True, scope="layer"),
                     progress=lambda _m: None)
    for layer in net.encoder.encoder.layer:
        att = layer.attention.self
        assert att.num_attention_heads == 2 and att.query.out_features == 16
        assert layer.intermediate.dense.out_features == 32
        assert layer.output.dense.out_features == 32  # the hidden size stays
    out = net(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(32, 12,
                                                                          dtype=torch.long))
    assert out["logits"].shape == (32, 3) and out["sentence_embedding"].shape == (32, 32)


@pytest.mark.slow
def test_cli_prunes_a_kit_and_reports_sparsity(perception_kit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from rtinfer.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["prune", "--kit", "perception", "--small", "--amount", "0.5",
                              "--scope", "layer", "--no-measure", "-q", "--out",
                              str(tmp_path / "repo"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "sparsity per layer" in res.output and "stages.0.conv1" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["recipe"][0]["amount"] == 0.5
    assert abs(report["sparsity"]["layers"][0]["sparsity"] - 0.5) < 1e-3
    assert (tmp_path / "repo" / "perception-prune" / "1" / "manifest.json").is_file()
    bad = runner.invoke(app, ["prune", "--kit", "perception", "--small", "--structured",
                              "--threshold", "0.1"])
    assert isinstance(bad.exception, ValueError)
    assert "for channels give amount" in str(bad.exception)
