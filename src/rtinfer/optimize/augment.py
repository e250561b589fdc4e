"""Unlabelled text for distillation: the training sentences, varied the way people vary them.

A student distilled only on template sentences learns the templates: on the intent kit one
matched its teacher on 96.5% of held-out template sentences but on 79.5% of hand-written
requests. The teacher's soft labels need no ground truth, so the student can also be trained
to match the teacher on sentences no template produced. :func:`text_variants` makes them from
the training sentences with edits that keep the request recognisable (seeded, so a recipe
replays):

- fillers and politeness before or after (``"could you"``, ``"please"``, ``"right now"``),
- one word dropped (articles and possessives go missing in chat),
- two neighbouring words swapped,
- a typo: one letter doubled, dropped or swapped with its neighbour.

    text_variants(["turn on the kitchen light"], 3, seed=0)
    # e.g. ['could you turn on the kitchen light', 'turn on kitchen light',
    #       'turn on the kitchen ligth']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["VARIED_SAMPLES", "text_variants", "varied_inputs"]

#: Varied sentences the varied-agreement guard judges on: at 98% agreement the standard error
#: is 0.44 points, so a candidate at 96.7% (the intent kit's static int8) is 3 errors below.
_VARIED_MIN = 200
VARIED_SAMPLES = 1000

_BEFORE = ("please", "hey", "could you", "can you", "i want to", "i'd like to", "ok so",
           "hi, can you", "quick one:", "would you")
_AFTER = ("please", "thanks", "now", "right now", "for me", "asap", "thank you", "if you can")


def text_variants(sentences: Sequence[str], n: int, *, seed: int = 0,
                  edits: int = 1) -> list[str]:
    """``n`` variants of sentences drawn (with replacement) from ``sentences``; ``edits`` or
    ``edits + 1`` edits each (see the module docstring)."""
    if not sentences:
        raise ValueError("text_variants needs at least one sentence to vary")
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(sentences), n):
        words = str(sentences[i]).split()
        for _ in range(edits + int(rng.random() < 0.4)):
            words = _edit(words, rng)
        out.append(" ".join(words))
    return out


def _edit(words: list[str], rng: np.random.Generator) -> list[str]:
    kind = rng.integers(0, 5)
    if kind == 0:
        return str(rng.choice(_BEFORE)).split() + words
    if kind == 1:
        return words + str(rng.choice(_AFTER)).split()
    if kind == 2 and len(words) > 3:  # short requests keep every word
        drop = int(rng.integers(0, len(words)))
        return words[:drop] + words[drop + 1:]
    if kind == 3 and len(words) > 2:
        j = int(rng.integers(0, len(words) - 1))
        return [*words[:j], words[j + 1], words[j], *words[j + 2:]]
    long = [j for j, w in enumerate(words) if len(w) > 3 and w.isalpha()]
    if not long:
        return words
    j = int(rng.choice(long))
    w, k = words[j], int(rng.integers(1, len(words[j]) - 1))
    typo = (w[:k] + w[k] + w[k:], w[:k] + w[k + 1:], w[:k] + w[k + 1] + w[k] + w[k + 2:])
    return [*words[:j], typo[int(rng.integers(0, 3))], *words[j + 1:]]


def varied_inputs(kit: Any, split: str, *, n: int = VARIED_SAMPLES, seed: int = 0,
                  edits: int = 3) -> dict[str, np.ndarray] | None:
    """Model inputs for ``n`` varied sentences of a kit's ``split`` (``edits`` or one more
    edits each), for the varied-agreement guard; None when the kit keeps no sentences. A
    small split gets at most four variants per sentence (and at least 200): a task of 100
    sentences is judged on 400, not on 1,000 variants of the same few."""
    if kit is None or not hasattr(kit, "split"):
        return None
    raw = kit.split(split).raw.get("sentence")
    if raw is None or len(raw) == 0:
        return None
    n = min(n, max(_VARIED_MIN, 4 * len(raw)))
    return dict(kit.preprocess(text_variants([str(s) for s in raw], n, seed=seed,
                                             edits=edits)))
