"""Keras models on every engine, side by side in one run, and what ``rtinfer optimize`` adds.

    python benchmarks/tensorflow_engines.py [--models vision,text] [--threads 2] [--rounds 5]
                                            [--optimize-s 240] [--json out.json]

Two Keras models trained here on the kits' data (nothing is downloaded):

- **vision**: a small CNN on the perception kit's 32x32 digit images (NHWC), 10 classes;
- **text**: token embeddings (MiniLM's WordPiece ids from the intent kit), mean over the
  sentence's tokens, two dense layers, the kit's intents.

Each is imported (tf2onnx, verified against TensorFlow) and run as: TensorFlow eager (the Keras
model called), LiteRT fp32, LiteRT dynamic range, LiteRT full int8, ONNX Runtime fp32 and int8
(static QDQ), OpenVINO fp32 and int8 (NNCF), plus ``rtinfer optimize --max-drop 1pt``'s choice
(budget on the validation rows). All are measured in the same interleaved rounds: p50 / p99 at
batch 1 on real test rows (text at each sentence's own length), throughput at batch 32;
accuracy on the held-out test rows; file size. Ratios are medians over rounds of per-round p50
ratios, to TensorFlow eager and to ONNX Runtime fp32; "vs best off-the-shelf" compares the
choice with the fastest of LiteRT full int8, ONNX Runtime int8 and OpenVINO int8 (issue goal:
>= 1.2x). Percentiles: numpy linear (Hyndman-Fan type 7).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

import rtinfer
from rtinfer.bench.interleave import measure_interleaved
from rtinfer.bench.samples import real_batches
from rtinfer.engines.base import run_in_batches
from rtinfer.hardware import cpu_info
from rtinfer.models.tensorflow_model import tflite_of
from rtinfer.models.tflite_file import load_tflite
from rtinfer.optimize import Quantize, quantize
from rtinfer.optimize.search import optimize

OFF_THE_SHELF = ("LiteRT full int8", "ONNX Runtime int8", "OpenVINO int8")


class _Eager:
    """The Keras model called eagerly, with a session's ``run``."""

    def __init__(self, model: Any, outputs: list[str]) -> None:
        self.model, self.outputs = model, outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model(feeds if len(feeds) > 1 else next(iter(feeds.values())),
                         training=False)
        return {self.outputs[0]: np.asarray(out)}


def _vision() -> tuple[Any, dict[str, tuple[dict[str, np.ndarray], np.ndarray]]]:
    import keras

    kit = rtinfer.kits.load("perception")
    splits = {s: ({"image": np.ascontiguousarray(kit.split(s).inputs["image"].transpose(
        0, 2, 3, 1))}, kit.split(s).targets) for s in ("train", "validation", "test")}
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = inp
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="vision")
    _fit(model, splits["train"], epochs=30)
    return model, splits


def _text() -> tuple[Any, dict[str, tuple[dict[str, np.ndarray], np.ndarray]]]:
    import keras

    kit = rtinfer.kits.load("intent")
    names = ("input_ids", "attention_mask")
    splits = {s: ({k: kit.split(s).inputs[k] for k in names}, kit.split(s).targets)
              for s in ("train", "validation", "test")}
    classes = int(max(t.max() for _, t in splits.values())) + 1
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int64", name="input_ids")
    mask = keras.Input((None,), dtype="int64", name="attention_mask")
    emb = keras.layers.Embedding(30522, 96)(ids)
    weights = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    pooled = keras.ops.sum(emb * weights, axis=1) / keras.ops.maximum(
        keras.ops.sum(weights, axis=1), 1.0)
    x = keras.layers.Dense(256, activation="relu")(pooled)
    x = keras.layers.Dense(128, activation="relu")(x)
    model = keras.Model([ids, mask], keras.layers.Dense(classes, name="logits")(x),
                        name="text")
    _fit(model, splits["train"], epochs=12)
    return model, splits


def _fit(model: Any, train: tuple[dict[str, np.ndarray], np.ndarray], epochs: int) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = train
    model.fit(x if len(x) > 1 else next(iter(x.values())), y, epochs=epochs, batch_size=64,
              verbose=0)


def _accuracy(session: Any, inputs: dict[str, np.ndarray], targets: np.ndarray) -> float:
    logits = run_in_batches(session, inputs, 64)["logits"]
    return float((logits.argmax(1) == targets).mean())


def run(name: str, threads: int, rounds: int, optimize_s: float) -> dict[str, Any]:
    keras_model, splits = _vision() if name == "vision" else _text()
    work = Path(tempfile.mkdtemp(prefix=f"rtinfer-bench-{name}-"))
    keras_model.save(work / f"{name}.keras")
    fp32 = rtinfer.import_model(work / f"{name}.keras")
    calibration = splits["validation"][0]
    models = {
        "LiteRT fp32": (load_tflite(tflite_of(fp32)), "litert"),
        "LiteRT dynamic range": (quantize(fp32, Quantize(method="dynamic", engine="litert")),
                                 "litert"),
        "LiteRT full int8": (quantize(fp32, Quantize(engine="litert"), calibration), "litert"),
        "ONNX Runtime fp32": (fp32, "onnxruntime"),
        "ONNX Runtime int8": (quantize(fp32, Quantize(), calibration), "onnxruntime"),
        "OpenVINO fp32": (fp32, "openvino"),
        "OpenVINO int8": (quantize(fp32, Quantize(engine="openvino"), calibration), "openvino"),
    }
    val_x, val_y = splits["validation"]
    test_x, test_y = splits["test"]
    np.savez(work / "data.npz", **val_x, labels=val_y)
    result = optimize(work / f"{name}.keras", data=work / "data.npz", max_drop="1pt",
                      time_budget_s=optimize_s, threads=threads, out=work / "repo", name=name)
    chosen = rtinfer.deploy.artifact.load_artifact(result["artifact"])
    choice = f"rtinfer optimize: {result['chosen']['variant']} on {result['chosen']['engine']}"
    models[choice] = (chosen.model, result["chosen"]["engine"])
    sessions: dict[str, Any] = {"TensorFlow eager": _Eager(keras_model, ["logits"])}
    sessions.update({k: rtinfer.load(m, e, threads) for k, (m, e) in models.items()})
    one, many = real_batches(test_x, 1), real_batches(test_x, 32, count=8)
    lat = measure_interleaved(sessions, one, rounds=rounds, window_s=0.5)
    thr = measure_interleaved(sessions, many, rounds=max(2, rounds // 2), window_s=0.5)
    base_eager, base_ort = lat["TensorFlow eager"], lat["ONNX Runtime fp32"]

    def vs(row: dict[str, Any], base: dict[str, Any]) -> float:
        return median(b / r for b, r in zip(base["round_p50_ms"], row["round_p50_ms"],
                                            strict=True))

    table = []
    for key, session in sessions.items():
        size = (keras_model.count_params() * 4 if key == "TensorFlow eager"
                else models[key][0].size_bytes)
        table.append({"candidate": key, "p50_ms": lat[key]["latency_ms"]["p50"],
                      "p99_ms": lat[key]["latency_ms"]["p99"],
                      "batch32_samples_per_s": thr[key]["samples_per_s"],
                      "accuracy": _accuracy(session, test_x, test_y), "bytes": size,
                      "vs_tf_eager": vs(lat[key], base_eager),
                      "vs_ort_fp32": vs(lat[key], base_ort)})
    best = max((r for r in table if r["candidate"] in OFF_THE_SHELF),
               key=lambda r: r["vs_ort_fp32"])
    mine = next(r for r in table if r["candidate"] == choice)
    return {"model": name, "threads": threads, "rounds": rounds, "table": table,
            "choice": choice, "why": result["chosen"]["why"],
            "best_off_the_shelf": best["candidate"],
            "choice_vs_best_off_the_shelf": mine["vs_ort_fp32"] / best["vs_ort_fp32"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vision,text")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--optimize-s", type=float, default=240.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cpu = cpu_info()
    out = {"cpu": cpu.model, "estimator": "numpy linear (Hyndman-Fan type 7)", "runs": []}
    for name in args.models.split(","):
        res = run(name, args.threads, args.rounds, args.optimize_s)
        out["runs"].append(res)
        print(f"\n{name}: batch 1 on real test rows, {args.threads} threads, {args.rounds} "
              f"interleaved rounds, {cpu.model}")
        print("| candidate | p50 ms | p99 ms | batch-32 samples/s | accuracy | size KB | "
              "vs TF eager | vs ORT fp32 |\n|---|---|---|---|---|---|---|---|")
        for r in res["table"]:
            print(f"| {r['candidate']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{r['batch32_samples_per_s']:,.0f} | {r['accuracy']:.4f} | "
                  f"{r['bytes'] / 1024:,.0f} | {r['vs_tf_eager']:.1f}x | "
                  f"{r['vs_ort_fp32']:.2f}x |")
        print(f"choice: {res['choice']} ({res['why']}); "
              f"{res['choice_vs_best_off_the_shelf']:.2f}x the best off-the-shelf variant "
              f"({res['best_off_the_shelf']})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
