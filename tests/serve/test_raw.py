"""Raw inputs for kit-deployed models: the server pre-processes, clients need no kit code."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest_helpers import call, running

import rtinfer
from rtinfer.kits import Kit
from rtinfer.serve import create_app, load_repository
from rtinfer.serve.raw import decode_png


def _deploy(kit: Kit, model: str, repo: Path) -> Path:
    """The kit's model copied into ``repo`` with an ``rtinfer.json`` naming the kit."""
    shutil.copytree(kit.models[model].parent, repo / model)
    (repo / model / "rtinfer.json").write_text(json.dumps(
        {"kit": kit.name, "kit_size": "small", "threads": 1, "max_batch_size": 8}))
    return repo


def _reference(kit: Kit, model: str, raw_items: list[Any], output: str) -> np.ndarray:
    with rtinfer.load(kit.models[model], threads=1) as s:
        return s.run(kit.preprocess(raw_items))[output]


def png(image: np.ndarray) -> bytes:
    """An 8-bit gray PNG of ``image`` (H, W) in [0, 1], rows filtered with types 0..4 in turn
    (every filter the decoder must undo)."""
    pixels = np.round(image * 255).astype(np.int32)
    h, w = pixels.shape
    rows, prev = [], np.zeros(w, np.int32)
    for y in range(h):
        kind, line = y % 5, pixels[y]
        left = np.concatenate([[0], line[:-1]])
        up_left = np.concatenate([[0], prev[:-1]])
        p = left + prev - up_left
        paeth = np.where((abs(p - left) <= abs(p - prev)) & (abs(p - left) <= abs(p - up_left)),
                         left, np.where(abs(p - prev) <= abs(p - up_left), prev, up_left))
        pred = [0, left, prev, (left + prev) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((line - pred) & 0xFF).astype(np.uint8).tobytes())
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def test_png_decoder_undoes_every_filter() -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 9)) / 255.0
    np.testing.assert_allclose(decode_png(png(image)), image, atol=1e-6)
    with pytest.raises(rtinfer.InvalidInputError, match="not a PNG file"):
        decode_png(b"GIF89a")


def test_fraud_records_as_named_fields(fraud_kit: Kit, tmp_path: Path) -> None:
    from rtinfer.kits.fraud import FIELDS

    raw = fraud_kit.split("test").raw
    records = [{f: raw[f][i].item() for f in FIELDS} for i in range(3)]
    want = _reference(fraud_kit, "fraud-mlp", records, "probabilities")
    app = create_app(load_repository(_deploy(fraud_kit, "fraud-mlp", tmp_path)))
    with running(app) as url:
        client = httpclient.InferenceServerClient(url)
        meta = client.get_model_metadata("fraud-mlp")
        assert [i["name"] for i in meta["raw_inputs"]] == list(FIELDS)
        inputs = []
        for f in FIELDS:  # one v2 input per field, as the metadata's raw_inputs say
            column = np.array([r[f] for r in records])
            kind = "BYTES" if column.dtype.kind == "U" else "FP64"
            inp = httpclient.InferInput(f, [3], kind)
            inp.set_data_from_numpy(column.astype(object if kind == "BYTES" else np.float64),
                                    binary_data=kind != "BYTES")
            inputs.append(inp)
        got = client.infer("fraud-mlp", inputs).as_numpy("probabilities")
        np.testing.assert_allclose(got, want, atol=1e-5)
        status, body = call(url, "/v1/models/fraud-mlp:predict", {"instances": records})
        assert status == 200
        np.testing.assert_allclose(np.array(body["predictions"]), want, atol=1e-5)
        status, body = call(url, "/v1/models/fraud-mlp:predict",
                            {"instances": [{"amount": 3.0}]})
        assert status == 400 and "raw input for the fraud kit needs" in body["error"]
        # values the features cannot take (a log of a negative count) are the client's to fix
        for field, value, says in (("account_age_days", -1, "a finite number >= 0; "
                                    "transaction 1 has -1.0"),
                                   ("amount", -5.0, "a finite number >= 0"),
                                   ("distance_km", "far", "a number in every transaction")):
            bad = [dict(records[0]), {**records[1], field: value}]
            status, body = call(url, "/v1/models/fraud-mlp:predict", {"instances": bad})
            assert status == 400 and f"field '{field}' must be {says}" in body["error"], body
        # the tensor interface stays available
        features = fraud_kit.preprocess(records)["features"]
        status, body = call(url, "/v1/models/fraud-mlp:predict", {"inputs": features.tolist()})
        np.testing.assert_allclose(np.array(body["outputs"]), want, atol=1e-5)


def test_perception_png_images(perception_kit: Kit, tmp_path: Path) -> None:
    images = [np.asarray(perception_kit.split("test").raw["image"][i], np.float64)
              for i in range(2)]
    images = [np.round(im * 255) / 255 for im in images]  # what an 8-bit PNG keeps
    want = _reference(perception_kit, "perception", images, "logits")
    app = create_app(load_repository(_deploy(perception_kit, "perception", tmp_path)))
    with running(app) as url:
        instances = [{"b64": base64.b64encode(png(im)).decode()} for im in images]
        status, body = call(url, "/v1/models/perception:predict", {"instances": instances})
        assert status == 200, body
        np.testing.assert_allclose(np.array(body["predictions"]), want, atol=1e-4)
        inp = httpclient.InferInput("image_png", [2], "BYTES")
        inp.set_data_from_numpy(np.array([png(im) for im in images], dtype=object))
        got = httpclient.InferenceServerClient(url).infer("perception", [inp])
        np.testing.assert_allclose(got.as_numpy("logits"), want, atol=1e-4)
        status, body = call(url, "/v1/models/perception:predict",
                            {"instances": [{"b64": "bm90IGEgcG5n"}]})
        assert status == 400 and "not a PNG file" in body["error"]


@pytest.mark.slow
def test_intent_sentences_batched_by_length_bucket(intent_kit: Kit, tmp_path: Path) -> None:
    sentences = ["lights on", "turn off the kitchen light please",
                 "what is the temperature in the living room right now", "open the garage",
                 "set the bedroom lights to fifty percent brightness", "lock the front door"] * 2
    with rtinfer.load(intent_kit.model_path, threads=1) as s:  # each sentence on its own
        want = np.concatenate([s.run(intent_kit.preprocess([t]))["logits"] for t in sentences])
    repo = _deploy(intent_kit, intent_kit.model_path.parent.name, tmp_path)
    name = intent_kit.model_path.parent.name
    app = create_app(load_repository(repo, overrides={"length_buckets": [8, 16, 32],
                                                      "max_queue_delay_us": 100_000}))
    with running(app) as url:
        client = httpclient.InferenceServerClient(url, concurrency=len(sentences))
        pending = []
        for text in sentences:
            inp = httpclient.InferInput("text", [1], "BYTES")
            inp.set_data_from_numpy(np.array([text.encode()], dtype=object))
            pending.append(client.async_infer(name, [inp]))
        got = np.concatenate([p.get_result().as_numpy("logits") for p in pending])
        stats = call(url, f"/v2/models/{name}/stats")[1]["model_stats"][0]
    # padding to the bucket is masked: the same logits as each sentence alone
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert stats["execution_count"] < len(sentences)
    assert intent_kit.labels[int(got[0].argmax())] == intent_kit.labels[int(want[0].argmax())]
