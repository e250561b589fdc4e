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

Chinese is written without spaces, so a sentence with Han characters is varied by character:
a filler or politeness before or after (``"麻烦"``, ``"帮我"``, ``"一下"``, ``"好吗"``),
one particle or function character dropped (``的``, ``了``, ``把``), a word swapped for a
synonym (``关闭`` → ``关掉``, ``开始`` → ``启动``), two neighbouring characters swapped, or
punctuation a chat adds (``，``, ``？``)::

    text_variants(["打开客厅的灯"], 3, seed=0)
    # ['打客开厅的灯', '请打开客厅的灯哈', '打开客的厅灯']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["VARIED_SAMPLES", "has_han", "text_variants", "varied_inputs"]

#: Varied sentences the varied-agreement guard judges on: at 98% agreement the standard error
#: is 0.44 points, so a candidate at 96.7% (the intent kit's static int8) is 3 errors below.
_VARIED_MIN = 200
VARIED_SAMPLES = 1000

_BEFORE = ("please", "hey", "could you", "can you", "i want to", "i'd like to", "ok so",
           "hi, can you", "quick one:", "would you")
_AFTER = ("please", "thanks", "now", "right now", "for me", "asap", "thank you", "if you can")
_BEFORE_ZH = ("请", "帮我", "麻烦", "麻烦你", "能不能", "可以帮我", "你好，", "嗯，", "我想",
              "帮忙", "小爱同学，", "那个，", "快")
_AFTER_ZH = ("吧", "一下", "谢谢", "好吗", "呢", "啊", "可以吗", "，谢谢", "！", "？", "。", "哈",
             "好不好", "呗")
# Characters chat drops without changing the request: particles, measure words, coverbs.
_DROPPABLE_ZH = frozenset("的了吧呢啊把给将让请个一下")
# Words a request says either way (a paraphrase keeps the intent): verbs of switching,
# starting, stopping and setting, and everyday nouns. Each group with its words longest first,
# the order a text is searched in, so 关掉 is found before 关.
_SYNONYMS_ZH = tuple((words, sorted(words, key=len, reverse=True)) for words in (
    group.split("|") for group in (
    "打开|开启|开一下|打开一下", "关闭|关掉|关上|关一下", "开始|启动|开启", "停止|停下|停掉",
    "暂停|先停", "继续|恢复|接着", "取消|删除|删掉|去掉", "调到|调成|设成|设为|设置为|调为",
    "调高|调大|提高|加大", "调低|调小|降低|减小", "增加|加上|多加", "减少|减去|减掉",
    "音量|声音", "现在|目前|当前|这会儿", "多少|几", "帮我|给我|替我", "告诉我|跟我说",
    "什么|啥", "怎么样|如何|咋样", "吗|么", "一下|一下子", "房间|屋里", "所有|全部|全",
)))


def text_variants(sentences: Sequence[str], n: int, *, seed: int = 0,
                  edits: int = 1) -> list[str]:
    """``n`` variants of sentences drawn (with replacement) from ``sentences``; ``edits`` or
    ``edits + 1`` edits each (see the module docstring)."""
    if not sentences:
        raise ValueError("text_variants needs at least one sentence to vary")
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(sentences), n):
        text = str(sentences[i])
        han = has_han(text)
        # Chinese varies by character (no spaces between words), other text by word.
        words = list(text) if han else text.split()
        for _ in range(edits + int(rng.random() < 0.4)):
            words = _edit_zh(words, rng) if han else _edit(words, rng)
        out.append(("" if han else " ").join(words))
    return out


def has_han(text: str) -> bool:
    """True when ``text`` holds a CJK unified ideograph (Chinese, or Japanese kanji)."""
    return any("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in text)


def _edit_zh(chars: list[str], rng: np.random.Generator) -> list[str]:
    kind = rng.integers(0, 6)
    if kind == 5:  # a synonym for the first word of a group the text holds
        text = "".join(chars)
        for group, longest_first in _SYNONYMS_ZH:
            found = next((w for w in longest_first if w in text), None)
            if found is not None:
                other = str(rng.choice([w for w in group if w != found]))
                return list(text.replace(found, other, 1))
        kind = rng.integers(0, 5)  # nothing to swap: another edit
    if kind == 0:
        return list(str(rng.choice(_BEFORE_ZH))) + chars
    if kind == 1:
        return chars + list(str(rng.choice(_AFTER_ZH)))
    if kind == 2 and len(chars) > 3:
        droppable = [j for j, c in enumerate(chars) if c in _DROPPABLE_ZH]
        if droppable:
            drop = int(rng.choice(droppable))
            return chars[:drop] + chars[drop + 1:]
    if kind == 3 and len(chars) > 3:
        j = int(rng.integers(0, len(chars) - 1))
        if has_han(chars[j]) and has_han(chars[j + 1]):  # never 26 -> 62: numbers keep meaning
            return [*chars[:j], chars[j + 1], chars[j], *chars[j + 2:]]
    if len(chars) > 3:  # a pause a chat writes: a comma or a space inside the request
        j = int(rng.integers(1, len(chars)))
        if not (chars[j - 1].isascii() and chars[j].isascii()):  # never inside 26 or tv
            return [*chars[:j], str(rng.choice(["，", " "])), *chars[j:]]
    return chars


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
