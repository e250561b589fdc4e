"""`rtinfer bench` and `rtinfer report` from the command line: JSON results beside the run's
logs, and one self-contained HTML page comparing runs."""

from __future__ import annotations

import json
import re
import xml.dom.minidom
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from browser import assert_laid_out_in_browser, needs_chromium
from rtinfer.bench.report import flatten_runs, load_report
from rtinfer.cli import app
from rtinfer.models import ImportedModel
from svg_layout import assert_laid_out, frame, parse

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(chain: ImportedModel, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("runs")
    paths = []
    for name, qps in (("light", 100), ("heavier", 300)):
        path = tmp / f"{name}.json"
        res = runner.invoke(app, ["bench", str(chain.path), "--scenario", "server", "--qps",
                                  str(qps), "--slo-p99-ms", "50", "--duration", "0.3",
                                  "--min-queries", "60", "--threads", "1", "--name", "chain",
                                  "--json", str(path), "-q"])
        assert res.exit_code == 0, res.output
        paths.append(path)
    return paths


def test_bench_cli_prints_the_verdict_and_keeps_logs_beside_the_json(
        two_runs: list[Path]) -> None:
    result = json.loads(two_runs[0].read_text())
    logs = two_runs[0].with_name("light-loadgen")
    assert Path(result["logs"]["dir"]) == logs
    assert (logs / "server_queries.npz").is_file()
    assert result["load"]["scenario"] == "server" and result["load"]["qps"] == 100
    assert result["objective"]["p99_ms"] == 50 and result["series"] == "chain"
    assert result["target"]["engine"]["threads"] == 1


def test_report_html_is_self_contained_with_the_three_plots(two_runs: list[Path],
                                                            tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["report", *map(str, two_runs), "--html", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:
        xml.dom.minidom.parseString(svg)  # well-formed
    assert "objective 50 ms" in page  # the objective line
    assert "chain server @ 100 QPS" in page and "chain server @ 300 QPS" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "Hyndman-Fan" in page  # the estimator is named


def test_report_refuses_results_it_cannot_draw(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "rtinfer.result/1", "kind": "bench-model"}))
    res = runner.invoke(app, ["report", str(other), "--html", str(tmp_path / "r.html")])
    assert res.exit_code != 0 and "bench-model" in res.output
    with pytest.raises(ValueError, match="not a load-test result"):
        flatten_runs([{"kind": "bench-model"}])
    with pytest.raises(ValueError, match="no runs"):
        load_report([{"kind": "loadgen-sweep", "runs": []}])


def test_bench_cli_refuses_a_server_run_without_qps(chain: ImportedModel) -> None:
    res = runner.invoke(app, ["bench", str(chain.path), "--scenario", "server"])
    assert res.exit_code != 0
    assert "needs the offered load" in str(res.exception)


def _run(series: str, qps: float, p99: float, objective: float) -> dict[str, Any]:
    """A server-scenario LoadGen result as ``rtinfer bench --json`` writes it (trimmed)."""
    ms = np.random.default_rng(int(qps)).lognormal(np.log(p99 / 3), 0.4, 2000)
    qs = [*range(0, 100), 99.5, 99.9, 100.0]
    pct = np.percentile(ms, qs)
    return {"kind": "loadgen", "label": f"{series} server @ {qps:g} QPS", "series": series,
            "load": {"scenario": "server", "qps": qps, "generator": "MLPerf LoadGen"},
            "throughput": {"samples_per_s": qps * 0.99},
            "latency_ms": {"p50": float(pct[50]), "p90": float(pct[90]), "p99": p99,
                           "p99_9": float(pct[101]), "n": 2000,
                           "estimator": "numpy linear (Hyndman-Fan type 7)"},
            "objective": {"p99_ms": objective}, "valid": p99 <= objective,
            "validity": "VALID" if p99 <= objective else "INVALID",
            "invalid_reasons": [], "warnings": [], "resources": {}, "logs": {"dir": "/tmp/x"},
            "environment": {"cpu": {"model": "AMD EPYC", "usable_cores": 2, "flags": ["avx2"]},
                            "versions": {"onnxruntime": "1.20"}},
            "cdf_ms": [[float(q), float(v)] for q, v in zip(qs, pct, strict=True)]}


@pytest.mark.parametrize("names", [
    ["chain", "chain int8"],
    [f"bert-base-uncased int8-dynamic on onnxruntime, {t} threads, max batch {b}, "
     "dynamic batching with a 2 ms queue delay" for t in (1, 2, 4) for b in (1, 8, 32)],
], ids=["short", "nine-long"])
def test_report_charts_keep_every_label_inside(names: list[str]) -> None:
    results = [_run(name, qps, p99=3.0 * k * (i + 1), objective=25.0)
               for k, name in enumerate(names, 1) for i, qps in enumerate((50, 200, 800))]
    page = load_report(results)
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 3
    for svg in svgs:
        items = assert_laid_out(svg)    # inside the viewBox; objective labels in the frame
        legend = " ".join(t.text for t in items if t.cls == "legend")
        assert all(name in legend for name in names)   # wrapped, not cut
        assert sum(t.text.startswith("objective 25 ms") for t in items) == 1
        plot = frame(parse(svg))
        assert all(t.box.within(plot) for t in items if t.text.startswith("objective"))


@needs_chromium
def test_the_report_lays_out_in_a_real_browser(tmp_path: Path) -> None:
    """Nine long series names and the objective line, as Chromium draws them: offline, no
    script error, every label in its picture, the legend off the plot (it was cut off)."""
    names = [f"bert-base-uncased int8-dynamic on onnxruntime, {t} threads, max batch {b}"
             for t in (1, 2, 4) for b in (1, 8, 32)]
    results = [_run(name, qps, p99=3.0 * k * (i + 1), objective=25.0)
               for k, name in enumerate(names, 1) for i, qps in enumerate((50, 200, 800))]
    charts = assert_laid_out_in_browser(load_report(results), tmp_path)
    assert len(charts) == 3
    for items in charts:
        legend = " ".join(t.text for t in items if t.cls == "legend")
        assert all(name in legend for name in names)
        assert sum(t.text.startswith("objective 25 ms") for t in items) == 1
