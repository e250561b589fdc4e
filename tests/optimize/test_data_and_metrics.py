"""Representative data as an iterable of batches, and a user's own metric as module:function."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import rtinfer
from rtinfer.models import ImportedModel
from rtinfer.optimize import Quantize, quantize
from rtinfer.optimize.quantize import as_feeds
from rtinfer.optimize.run import run_quantize


def _images(n: int, seed: int) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)}


def test_iterable_of_batches_calibrates_like_the_same_arrays(cnn: ImportedModel) -> None:
    data = _images(32, 0)

    def loader() -> Iterator[dict[str, np.ndarray]]:  # a generator, read once
        for i in range(0, 32, 8):
            yield {"image": data["image"][i:i + 8]}

    from_arrays = quantize(cnn, Quantize(), data)
    from_batches = quantize(cnn, Quantize(), loader())
    probe = _images(4, 1)
    with rtinfer.load(from_arrays) as a, rtinfer.load(from_batches) as b:
        np.testing.assert_array_equal(a.run(probe)["logits"], b.run(probe)["logits"])


def test_bad_representative_data_says_what_is_wrong() -> None:
    with pytest.raises(TypeError, match="item 1 of the representative data is a list"):
        as_feeds([{"x": np.zeros((1, 2))}, [1, 2]])
    with pytest.raises(ValueError, match=r"item 1 has inputs \['y'\]; earlier items had \['x'\]"):
        as_feeds([{"x": np.zeros((1, 2))}, {"y": np.zeros((1, 2))}])
    with pytest.raises(ValueError, match="the representative data is empty"):
        as_feeds(iter([]))
    with pytest.raises(TypeError, match="must be a dict of arrays or an iterable"):
        as_feeds(3)  # type: ignore[arg-type]


def test_user_metric_as_module_function_sets_the_budget(cnn: ImportedModel, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_metrics.py").write_text(
        "import numpy as np\n"
        "calls = []\n"
        "def confident(targets, outputs):\n"
        "    calls.append(targets)\n"
        "    logits = outputs['logits']\n"
        "    e = np.exp(logits - logits.max(1, keepdims=True))\n"
        "    return float((e / e.sum(1, keepdims=True)).max(1).mean())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    np.savez(tmp_path / "data.npz", **_images(48, 2))
    result = run_quantize(cnn.path, data=tmp_path / "data.npz", max_drop="5%",
                          metric="my_metrics:confident", try_dynamic=False)
    assert result["status"] == "ok"
    assert result["budget"]["metric"] == "confident"
    assert set(result["float_metrics"]) == {"confident"}
    assert set(result["held_out"]["int8"]) == {"confident"}
    assert all(t is None for t in sys.modules["my_metrics"].calls)  # no labels: None
    with pytest.raises(ValueError, match="cannot load the metric 'no_such_module:f'"):
        run_quantize(cnn.path, data=tmp_path / "data.npz", metric="no_such_module:f")


def test_quantize_without_max_drop_has_a_real_budget(cnn: ImportedModel, tmp_path: Path
                                                     ) -> None:
    """No --max-drop: 1% of the float value, said in the progress and the result (it was
    100%, which let any model through)."""
    np.savez(tmp_path / "data.npz", **_images(48, 2))
    said: list[str] = []
    result = run_quantize(cnn.path, data=tmp_path / "data.npz", try_dynamic=False,
                          progress=said.append)
    assert (result["budget"]["max_drop"], result["budget"]["kind"]) == (0.01, "relative")
    assert any(s.startswith("budget:") and "1.00% of the float value" in s
               and "the default" in s for s in said), said
