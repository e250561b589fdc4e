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
from rtinfer.optimize.passes.quantize import as_feeds
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
    """No --max-drop: 1% of the original's value with the agreement guard, said in the
    progress and the result (it was 100%, which let any model through)."""
    np.savez(tmp_path / "data.npz", **_images(48, 2))
    said: list[str] = []
    result = run_quantize(cnn.path, data=tmp_path / "data.npz", try_dynamic=False,
                          progress=said.append)
    assert (result["budget"]["max_drop"], result["budget"]["kind"]) == (0.01, "relative")
    assert result["budget"]["default"]
    said_budget = [s for s in said if s.startswith("budget:")]
    assert len(said_budget) == 1 and "the default" in said_budget[0], said
    assert "logits.cosine may drop by at most 1.00% of the original's value" in said_budget[0]
    assert "top-1 agreement with the original (logits) at least 0.98" in said_budget[0]


def test_an_extra_evaluation_set_is_reported_and_never_chooses(cnn: ImportedModel,
                                                              tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", **_images(48, 2))
    extra = _images(20, 9)
    np.savez(tmp_path / "extra.npz", **extra, labels=np.arange(20) % 10)
    result = run_quantize(cnn.path, data=tmp_path / "data.npz", try_dynamic=False,
                          max_drop="5%", extra_eval=tmp_path / "extra.npz")
    beyond = result["held_out"]["beyond_split"]
    assert beyond["what"] == "20 samples from extra.npz" and beyond["samples"] == 20
    assert 0.0 <= beyond["agreement"] <= 1.0 and beyond["fidelity"]["logits"]["cosine_min"] > 0.9
    # Without labels in --data there is no task metric, so none is computed on it either.
    assert beyond["original"] == beyond["candidate"] == {}


def test_a_bad_extra_evaluation_set_fails_before_any_work(cnn: ImportedModel,
                                                          tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", **_images(48, 2))
    np.savez(tmp_path / "extra.npz", pixels=np.zeros((2, 3), np.float32))
    said: list[str] = []
    with pytest.raises(ValueError, match=r"extra.npz lacks arrays for input\(s\) \['image'\]"):
        run_quantize(cnn.path, data=tmp_path / "data.npz", extra_eval=tmp_path / "extra.npz",
                     progress=said.append)
    assert not any(s.startswith("quantizing") for s in said)
    np.savez(tmp_path / "ints.npz", image=np.zeros((2, 3, 32, 32), np.int64))
    with pytest.raises(ValueError, match="ints.npz: .*int64"):
        run_quantize(cnn.path, data=tmp_path / "data.npz", extra_eval=tmp_path / "ints.npz")
    np.savez(tmp_path / "short.npz", **_images(4, 1), labels=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="3 labels for 4 samples"):
        run_quantize(cnn.path, data=tmp_path / "data.npz", extra_eval=tmp_path / "short.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        run_quantize(cnn.path, data=tmp_path / "data.npz", extra_eval=tmp_path / "junk.npz")


def test_a_deadline_stops_the_budgeted_search_after_its_first_round(cnn: ImportedModel
                                                                     ) -> None:
    import time

    from rtinfer.optimize import Budget, quantize_within_budget

    data = _images(32, 0)
    result = quantize_within_budget(cnn, Quantize(), data, data,
                                    Budget.parse("0.00001pt", "logits.cosine"),
                                    deadline=time.monotonic())
    assert result.status == "over_budget" and result.model is None
    assert [s["what"] for s in result.steps] == ["everything quantized", "time budget reached"]
    assert result.evaluation is not None and not result.evaluation.within_budget
