"""Intent kit: real HA intents, split by template, MiniLM + head, our own sentences."""

from __future__ import annotations

import numpy as np
import pytest

import rtinfer
from rtinfer.kits import Kit
from rtinfer.kits.intent_data import IntentData, intent_sentences, split_by_template

pytestmark = pytest.mark.slow


def test_data_is_real_deterministic_and_split_by_template() -> None:
    data = intent_sentences(per_template=5, max_templates=120, seed=0)
    assert len(data.labels) == 42
    again = intent_sentences(per_template=5, max_templates=120, seed=0)
    assert again.sentences == data.sentences and again.intents == data.intents
    assert (again.template_ids == data.template_ids).all()
    splits = split_by_template(data, {"train": 0.7, "test": 0.3}, seed=0)
    train_templates = set(data.template_ids[splits["train"]])
    test_templates = set(data.template_ids[splits["test"]])
    assert not train_templates & test_templates  # no template leaks into both
    assert len(splits["train"]) + len(splits["test"]) == len(data.sentences)


def test_a_sentence_two_templates_draw_is_held_out_nowhere() -> None:
    """Split by template alone, "turn on the fan" would be in train (template 0) and in test
    (template 2): held-out splits keep only text that training never saw."""
    data = IntentData(
        sentences=["turn on the fan", "switch on the fan", "turn on the fan", "fan on please",
                   "stop the fan", "turn off the fan"],
        intents=["HassTurnOn"] * 4 + ["HassTurnOff"] * 2,
        template_ids=np.array([0, 0, 2, 2, 3, 4]), labels=["HassTurnOff", "HassTurnOn"])
    splits = split_by_template(data, {"train": 0.5, "test": 0.5}, seed=0)
    rows = {name: {data.sentences[r] for r in idx} for name, idx in splits.items()}
    assert not rows["train"] & rows["test"]
    assert "turn on the fan" in rows["train"]
    assert sum(map(len, splits.values())) == len(data.sentences) - 1  # the one repeat left out


def test_held_out_templates_clear_the_floor(intent_kit: Kit) -> None:
    assert intent_kit.quality["intent"]["accuracy"] >= 0.9  # small build; full: see README
    assert intent_kit.labels[:2] == ["HassBroadcast", "HassCancelAllTimers"]


def test_our_own_sentences_are_classified_sensibly(intent_kit: Kit) -> None:
    ours = {
        "please switch on the lights in the dining room": "HassTurnOn",
        "could you turn off the bathroom fan": "HassTurnOff",
        "set a timer for twelve minutes": "HassStartTimer",
        "what is the weather going to be like": "HassGetWeather",
        "what time is it right now": "HassGetCurrentTime",
        "add oat milk to my shopping list": "HassShoppingListAddItem",
        "pause the music": "HassMediaPause",
        "turn the volume down a bit": "HassSetVolumeRelative",
    }
    with rtinfer.load(intent_kit.model_path, threads=2) as s:
        logits = s.run(intent_kit.preprocess(list(ours)))["logits"]
    predicted = [intent_kit.labels[i] for i in logits.argmax(1)]
    right = sum(p == want for p, want in zip(predicted, ours.values(), strict=True))
    assert right >= 7, dict(zip(ours, predicted, strict=True))


def test_session_on_raw_split_matches_build_quality(intent_kit: Kit) -> None:
    with rtinfer.load(intent_kit.model_path, threads=2) as s:
        got = intent_kit.evaluate_session(s, "test")
    assert got["accuracy"] == pytest.approx(intent_kit.quality["intent"]["accuracy"], abs=0.005)


@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_same_logits_on_every_engine(intent_kit: Kit, engine: str) -> None:
    feeds = intent_kit.preprocess(["turn on the kitchen light", "what's the temperature inside",
                                   "start the vacuum"])
    with rtinfer.load(intent_kit.model_path, "onnxruntime", threads=2) as ref, \
            rtinfer.load(intent_kit.model_path, engine, threads=2) as s:
        np.testing.assert_allclose(s.run(feeds)["logits"], ref.run(feeds)["logits"], atol=1e-4)


def test_preprocess_rejects_non_text(intent_kit: Kit) -> None:
    with pytest.raises(TypeError, match="sentences"):
        intent_kit.preprocess([42])


def test_development_requests_cover_every_intent_and_share_none_with_the_evaluation_set(
) -> None:
    from rtinfer.kits.intent_requests import REQUESTS
    from rtinfer.kits.intent_requests_dev import DEV_REQUESTS

    per_intent: dict[str, int] = {}
    for intent, _ in DEV_REQUESTS:
        per_intent[intent] = per_intent.get(intent, 0) + 1
    assert per_intent == dict.fromkeys({intent for intent, _ in REQUESTS}, 2)
    assert not {t for _, t in DEV_REQUESTS} & {t for _, t in REQUESTS}  # tuned on != judged by
