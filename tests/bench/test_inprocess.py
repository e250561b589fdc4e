"""bench_model: cold start, stable windows, percentiles, throughput, resources, provenance."""

from __future__ import annotations

import json

import pytest

import rtinfer
from rtinfer.bench.inprocess import batch_feeds
from rtinfer.models import ImportedModel
from rtinfer.models.summary import count_flops


def test_result_follows_the_schema(cnn: ImportedModel) -> None:
    result = rtinfer.bench_model(cnn, engine="onnxruntime", threads=1, batch_sizes=[1, 4],
                                 window_s=0.05, peak_flops=1e11)
    json.dumps(result)  # writable as is
    assert result["schema"] == "rtinfer.result/1"
    assert result["engine"]["engine"] == "onnxruntime" and result["engine"]["threads"] == 1
    assert result["load"]["loop"] == "closed"
    cold = result["cold_start"]
    assert cold["load_s"] > 0 and cold["first_inference_s"] > 0
    assert [r["batch"] for r in result["results"]] == [1, 4]
    for row in result["results"]:
        lat = row["latency_ms"]
        assert lat["n"] >= 15 and "linear" in lat["estimator"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
        tp = row["throughput"]
        assert tp["samples_per_s"] == pytest.approx(row["batch"] * tp["inferences_per_s"])
        assert row["flops_per_inference"] == count_flops(cnn, batch=row["batch"])["total"]
        assert row["efficiency"] == pytest.approx(
            row["flops_per_inference"] / (lat["p50"] / 1e3) / 1e11)
        assert 0 < row["cpu_percent"] < 100 * 1.3  # one thread budget
        assert row["input_shapes"]["image"] == [row["batch"], 3, 32, 32]
    assert result["resources"]["peak_rss_bytes"] >= result["resources"]["rss_bytes"] > 0
    assert result["peak_flops"]["source"] == "given by the user"
    assert result["environment"]["versions"]["onnxruntime"]


def test_given_inputs_are_repeated_to_the_batch(cnn: ImportedModel) -> None:
    one = cnn.spec.example_inputs(batch=2, seed=3)
    feeds = batch_feeds(cnn, 5, inputs=one)
    assert feeds["image"].shape == (5, 3, 32, 32)
    assert (feeds["image"][4] == one["image"][0]).all()


def test_bad_batch_sizes(cnn: ImportedModel) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        rtinfer.bench_model(cnn, batch_sizes=[0])


def test_estimated_peak_names_its_assumptions(cnn: ImportedModel) -> None:
    result = rtinfer.bench_model(cnn, threads=1, window_s=0.02)
    assert result["peak_flops"]["source"].startswith("estimated: 1 cores x")
    assert result["peak_flops"]["value"] > 0
