"""A text task: the user's transformers sequence classifier and a CSV of labelled sentences.

The classifier is built here from the real MiniLM weights (a BERT sequence-classification
head fitted on the sentences' pooled outputs) and saved as a transformers folder; the
sentences are written below. Nothing comes from a kit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

import rtinfer
from rtinfer import tasks
from rtinfer.cli import app

runner = CliRunner()

_PLACES = ["kitchen", "bedroom", "garage", "hallway", "office", "garden", "attic", "basement"]
_CITIES = ["paris", "tokyo", "lagos", "lima", "oslo", "cairo", "denver", "madrid"]
_SONGS = ["jazz", "the new album", "some rock", "my playlist", "classical music", "podcasts"]
_TEMPLATES = {
    "lights": ["turn on the {p} light", "switch off the lamp in the {p}", "dim the {p} lights",
               "can you light up the {p}", "lights off in the {p} please"],
    "weather": ["what's the weather in {c}", "will it rain in {c} tomorrow",
                "how hot is it in {c}", "forecast for {c} this weekend", "is it snowing in {c}"],
    "music": ["play {s}", "put on {s} in the {p}", "i want to hear {s}", "start {s}",
              "queue up {s} please"],
}


def _sentences() -> list[tuple[str, str]]:
    rows = set()
    for intent, templates in _TEMPLATES.items():
        for t in templates:
            for i, prefix in enumerate(["", "hey, ", "please ", "could you "]):
                for j in range(8):
                    rows.add((prefix + t.format(p=_PLACES[j], c=_CITIES[(j + i) % 8],
                                                s=_SONGS[(j + 2 * i) % 6]), intent))
    ordered = sorted(rows)
    np.random.default_rng(0).shuffle(ordered)  # type: ignore[arg-type]
    return ordered


@pytest.fixture(scope="module")
def text_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import transformers

    from rtinfer.models import minilm_folder

    folder = tmp_path_factory.mktemp("text-task")
    rows = _sentences()
    n = len(rows)
    parts = {"train": rows[: n // 2], "validation": rows[n // 2: 3 * n // 4],
             "test": rows[3 * n // 4:]}
    for name, part in parts.items():
        with (folder / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sentence", "intent"])
            w.writerows(part)
    classes = sorted(_TEMPLATES)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_folder()),
                                                           local_files_only=True)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(minilm_folder()), num_labels=len(classes), local_files_only=True).eval()
    enc = tokenizer([s for s, _ in parts["train"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.bert(**enc).pooler_output
    y = torch.tensor([classes.index(i) for _, i in parts["train"]])
    opt = torch.optim.Adam(model.classifier.parameters(), 1e-2)
    for _ in range(200):  # the head only: the encoder keeps MiniLM's weights
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.classifier(pooled), y).backward()
        opt.step()
    model.save_pretrained(folder / "classifier", safe_serialization=True)
    tokenizer.save_pretrained(folder / "classifier")
    (folder / "task.toml").write_text(
        'name = "commands"\n[model]\ntransformers = "classifier"\n[data]\n'
        'train = "train.csv"\nvalidation = "validation.csv"\ntest = "test.csv"\n'
        'label = "intent"\ntext = "sentence"\nmax_length = 32\n')
    return folder / "task.toml"


@pytest.mark.slow
def test_optimize_a_text_task_distills_quantizes_and_serves_sentences(
        text_task: Path, tmp_path: Path) -> None:
    task = tasks.load(text_task)
    assert task.labels == ["lights", "music", "weather"]
    assert list(task.model.spec.output_names) == ["logits"]  # the head was imported
    assert task.split("validation").raw["sentence"].dtype.kind == "U"  # varied-text guard

    repo, out = tmp_path / "repo", tmp_path / "optimize.json"
    res = runner.invoke(app, ["optimize", str(text_task), "--engines", "onnxruntime",
                              "--time-budget", "120s", "--window", "0.05", "--out", str(repo),
                              "--json", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    variants = {r["variant"] for r in result["candidates"]}
    assert {"fp32", "int8-dynamic", "distilled"} <= variants, variants
    for row in result["candidates"]:
        assert "accuracy" in row["validation"]["metrics"]
        assert "logits.top1@varied" in {c["metric"] for c in row["validation"]["checks"]}
    assert result["held_out"]["budget"]["checks"]
    chosen = next(r for r in result["candidates"] if r["chosen"])
    assert chosen["validation"]["within_budget"]

    settings = json.loads((repo / "commands" / "rtinfer.json").read_text())
    assert settings["raw"]["kind"] == "text"
    assert (repo / "commands" / "preprocess" / "tokenizer.json").is_file()
    from rtinfer.serve import create_app, load_repository
    from rtinfer.serve.inthread import serve_in_thread

    sentences = ["turn on the kitchen light", "will it rain in oslo tomorrow", "play jazz"]
    with serve_in_thread(create_app(load_repository(repo)), "/v2/health/ready") as base:
        client = httpclient.InferenceServerClient(base.removeprefix("http://"))
        text = httpclient.InferInput("text", [3], "BYTES")
        text.set_data_from_numpy(np.asarray([s.encode() for s in sentences], dtype=object))
        got = client.infer("commands", [text]).as_numpy("logits")
    with rtinfer.load(repo / "commands", threads=1) as s:
        want = s.run(task.preprocess(sentences))["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert got.argmax(1).tolist() == [0, 2, 1]  # lights, weather, music
