"""Distillation: a student derived from the teacher's own layers, the loss, a bounded run that
evaluates and writes an artifact, and an interrupted run that writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rtinfer.optimize import Distill, derive_student, distill
from rtinfer.optimize.training import kd_loss


def _tiny_bert(layers: int = 6):  # type: ignore[no-untyped-def]
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=layers,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=32)).eval()


def test_student_keeps_half_the_layers_with_the_teachers_weights() -> None:
    teacher = _tiny_bert(6)
    student, kept = derive_student(teacher, 0.5)
    assert kept == [0, 2, 5]  # evenly spaced, first and last included
    assert len(student.encoder.layer) == 3 and student.config.num_hidden_layers == 3
    assert len(teacher.encoder.layer) == 6  # the teacher is untouched
    for s_layer, t_index in zip(student.encoder.layer, kept, strict=True):
        for (name, p), q in zip(s_layer.state_dict().items(),
                                teacher.encoder.layer[t_index].state_dict().values(),
                                strict=True):
            assert torch.equal(p, q), name
    ids = torch.randint(1, 64, (2, 7))
    assert student(input_ids=ids).last_hidden_state.shape == (2, 7, 32)


def test_a_model_without_a_layer_stack_needs_a_given_student() -> None:
    with pytest.raises(ValueError, match="give Distill\\(student=...\\)"):
        derive_student(torch.nn.Linear(3, 3))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0}, "temperature must be > 0"),
    ({"alpha": 1.5}, "alpha weighs the teacher's soft targets"),
    ({"layers": 0.0}, "share of transformer layers"),
    ({"width": 1.2}, "share of FFN neurons"),
    ({"steps": -1}, "Distill.steps must be >= 0"),
    ({"balance": 1.5}, r"Distill.balance is in \[0, 1\]"),
])
def test_bad_settings_say_what_to_do(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Distill(**kwargs)


def test_recipe_names_modules_without_holding_them() -> None:
    config = Distill(teacher=_tiny_bert(2), steps=10)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["pass"] == "distill" and data["teacher"].startswith("BertModel (sha256 ")
    assert data["student"] is None and data["temperature"] == 4.0


def test_recipe_entries_replay_as_the_same_setting() -> None:
    config = Distill(steps=12, finetune_steps=3, width=0.5, augment=0.25, seed=4)
    assert Distill.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = {**config.to_dict(), "version": 1}
    old.pop("augment")
    old.pop("balance")
    assert Distill.from_dict(old).augment == 0.0  # version 1 trained on labels only
    assert Distill.from_dict(old).balance == 0.0  # before version 4: rows as they came
    balanced = Distill(balance=0.5)
    assert Distill.from_dict(balanced.to_dict()) == balanced
    assert "classes balanced 0.5" in balanced.describe()
    with pytest.raises(ValueError, match="pass it as Distill"):
        Distill.from_dict(Distill(teacher=_tiny_bert(2)).to_dict())
    with pytest.raises(ValueError, match="newer than this rtinfer reads"):
        Distill.from_dict({**config.to_dict(), "version": 99})
    with pytest.raises(ValueError, match="share of each distillation batch"):
        Distill(augment=1.0)


def test_text_variants_are_seeded_small_edits() -> None:
    from rtinfer.optimize.augment import text_variants

    sentences = ["turn on the kitchen light", "set a timer for five minutes", "pause"]
    got = text_variants(sentences, 200, seed=3)
    assert got == text_variants(sentences, 200, seed=3) != text_variants(sentences, 200, seed=4)
    assert len(set(got) - set(sentences)) > 50  # mostly new sentences
    for v in got:  # one or two edits: at most four words more, one fewer, never empty
        n = min(abs(len(v.split()) - len(s.split())) for s in sentences)
        assert v.strip() and n <= 5
    with pytest.raises(ValueError, match="at least one sentence"):
        text_variants([], 3)


def test_balanced_batches_draw_rare_classes_by_the_square_root_of_their_share() -> None:
    from rtinfer.optimize.training import batches

    targets = np.array([0] * 2500 + [1] * 25)  # 100 : 1
    inputs = {"x": np.arange(len(targets), dtype=np.float32)[:, None]}

    def share_of_rare(balance: float) -> float:
        stream = batches(inputs, targets, 64, seed=0, balance=balance)
        drawn = np.concatenate([next(stream)[1].numpy() for _ in range(300)])
        return float(np.mean(drawn == 1))

    assert share_of_rare(0.0) == pytest.approx(25 / 2525, abs=0.004)  # as the rows come
    assert share_of_rare(0.5) == pytest.approx(1 / 11, abs=0.01)       # sqrt: 10 : 1
    assert share_of_rare(1.0) == pytest.approx(0.5, abs=0.02)          # every class alike
    first = next(batches(inputs, targets, 64, seed=0, balance=0.5))[0]["x"]
    assert torch.equal(first, next(batches(inputs, targets, 64, seed=0, balance=0.5))[0]["x"])


def test_loss_is_kl_at_temperature_plus_cross_entropy() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    f = torch.nn.functional
    ce = f.cross_entropy(s, y)
    kl = f.kl_div(f.log_softmax(s / 4, -1), f.softmax(t / 4, -1), reduction="batchmean")
    got = kd_loss(s, t, y, temperature=4.0, alpha=0.3, embedding_weight=0.0)
    assert torch.allclose(got, 0.7 * ce + 0.3 * 16 * kl, atol=1e-6)
    same = kd_loss({"logits": s, "sentence_embedding": t}, {"logits": s, "sentence_embedding": t},
                   y, temperature=2.0, alpha=1.0, embedding_weight=1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-5)  # identical outputs: nothing to learn


@pytest.mark.slow
def test_distilled_intent_student_is_evaluated_and_written(intent_kit, tmp_path
                                                           ) -> None:  # type: ignore[no-untyped-def]
    config = Distill(steps=30, finetune_steps=10, batch_size=16)
    result = distill(kit=intent_kit, config=config, out=tmp_path, measure=False)
    rep = result.report
    assert rep["student"]["kept_layers"] == [0, 2, 5]
    assert rep["size"]["distilled"]["flops"] < 0.6 * rep["size"]["original"]["flops"]
    held = rep["held_out"]
    assert held["distilled"]["accuracy"] >= held["original"]["accuracy"] - 0.05
    assert held["fidelity"]["sentence_embedding"]["cosine_mean"] > 0.8
    assert rep["training"]["distill"]["steps"] == 30
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["recipe"]["passes"][0]["pass"] == "distill"
    assert manifest["measurements"]["accuracy_original"] == held["original"]
    # Half of each distillation batch was teacher-labelled variants of the training text.
    assert rep["augment"]["used"] and rep["augment"]["sentences"] == len(
        intent_kit.split("train"))
    # Judged under the default budget, every limit reported with what was allowed.
    limits = {c["metric"] for c in held["budget"]["checks"]}
    assert limits == {"accuracy", "macro_f1", "logits.top1", "logits.top1@varied",
                      "class_recall"}
    assert rep["status"] == ("ok" if held["budget"]["within_budget"] else "over_budget")
    assert rep["budget"]["default"]
    beyond = held["beyond_split"]
    assert beyond["samples"] == 126 and 0.0 <= beyond["agreement"] <= 1.0


@pytest.mark.slow
def test_interrupted_training_leaves_no_artifact(intent_kit, tmp_path
                                                 ) -> None:  # type: ignore[no-untyped-def]
    def interrupt(msg: str) -> None:
        if msg.startswith("distilling 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(kit=intent_kit, config=Distill(steps=40, batch_size=8), out=tmp_path,
                progress=interrupt)
    assert not any(tmp_path.rglob("manifest.json"))


@pytest.mark.slow
def test_cli_training_is_bounded_in_time(intent_kit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from rtinfer.cli import app

    res = CliRunner().invoke(app, ["distill", "--kit", "intent", "--small", "--steps", "10000",
                                   "--finetune-steps", "0", "--max-seconds", "3",
                                   "--no-measure", "-q", "--json", str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "d.json").read_text())
    run = report["training"]["distill"]
    assert run["stopped_early"] and 0 < run["steps"] < 10_000
    assert np.isfinite(report["held_out"]["distilled"]["accuracy"])
    assert "held-out accuracy drop" in res.output
    assert "budget on the held-out test split" in res.output
    assert "hand-written requests" in res.output
