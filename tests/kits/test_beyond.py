"""Each kit's evaluation set from outside its split rule: real model inputs, valid labels,
and evidence that it is harder than the held-out split it complements."""

from __future__ import annotations

import numpy as np
import pytest

import rtinfer
from rtinfer.kits import Kit
from rtinfer.kits.intent_requests import REQUESTS


@pytest.mark.parametrize("name", ["fraud", "perception", "intent"])
def test_beyond_split_runs_on_the_kit_model(name: str, request: pytest.FixtureRequest) -> None:
    kit: Kit = request.getfixturevalue(f"{name}_kit")
    found = kit.beyond_split()
    assert found is not None
    what, split = found
    assert what and len(split) > 100
    assert set(split.targets) <= set(range(len(kit.labels)))
    with rtinfer.load(kit.model_path, threads=2) as s:
        assert set(split.inputs) == set(s.spec.input_names)
        metrics = kit.recipe.evaluate(kit.meta, split.targets,
                                      rtinfer.engines.base.run_in_batches(s, split.inputs))
    assert all(np.isfinite(v) for v in metrics.values())
    assert kit.beyond_split()[1].targets.tolist() == split.targets.tolist()  # deterministic


def test_hand_written_requests_cover_every_intent_three_times() -> None:
    from collections import Counter

    from rtinfer.kits.intent import RECIPE

    assert len(REQUESTS) == 126 and set(Counter(i for i, _ in REQUESTS).values()) == {3}
    assert len({text for _, text in REQUESTS}) == 126
    assert RECIPE.beyond is not None


def test_hand_written_requests_are_harder_than_templates(intent_kit: Kit) -> None:
    """Why the set exists: the float model does clearly worse on it than on the held-out
    template split, yet far better than chance (42 intents)."""
    _, split = intent_kit.beyond_split()  # type: ignore[misc]
    with rtinfer.load(intent_kit.model_path, threads=2) as s:
        logits = rtinfer.engines.base.run_in_batches(s, split.inputs)["logits"]
    accuracy = float(np.mean(logits.argmax(1) == split.targets))
    assert 0.4 < accuracy < intent_kit.quality["intent"]["accuracy"]
