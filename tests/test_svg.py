"""The inline-SVG charts keep every label inside the picture: legends, tick labels, axis titles
and reference-line labels, for long names and many series too (checked by ``svg_layout``)."""

from __future__ import annotations

import pytest

from rtinfer._svg import Chart
from svg_layout import assert_laid_out, frame, parse, viewbox

LONG = ("int8-static quantized with per-channel weights, 4 threads, batch 8, OpenVINO "
        "throughput hint on a shared two-core container")


def _legend(svg: str) -> list[str]:
    return [t.text for t in assert_laid_out(svg) if t.cls == "legend"]


def test_short_names_sit_beside_the_plot() -> None:
    chart = Chart("p50 latency (ms, log scale)", "pr_auc", log_x=True)
    chart.series("within budget", [(0.0095, 0.3226), (0.012, 0.3219), (0.11, 0.3244)])
    chart.series("original = chosen (onnxruntime)", [(0.0095, 0.3226)])  # cut off before
    chart.hline(0.3126, "budget floor")
    svg = chart.render()
    items = assert_laid_out(svg)
    plot = frame(parse(svg))
    legend = [t for t in items if t.cls == "legend"]
    assert [t.text for t in legend] == ["within budget", "original = chosen (onnxruntime)"]
    assert all(t.box.x0 > plot.x1 for t in legend)      # to the right, not below
    assert plot.x1 - plot.x0 >= 400                     # the legend widened the chart instead
    assert [t.text for t in items if t.cls == "inframe"] == ["budget floor"]


def test_long_names_and_many_series_wrap_below_the_plot() -> None:
    chart = Chart("latency (ms, from scheduled issue time; log scale) " * 3,
                  "fraction of requests at or under this latency " * 2, log_x=True)
    names = [f"{i}: {LONG}" for i in range(14)]
    for i, name in enumerate(names):
        chart.series(name, [(0.1 * (i + 1), 0.0), (10.0 * (i + 1), 1.0)], marker=False,
                     line=True)
    svg = chart.render()
    plot = frame(parse(svg))
    items = assert_laid_out(svg)
    legend = [t for t in items if t.cls == "legend"]
    assert all(t.box.y0 > plot.y1 for t in legend)      # below the plot, wrapped
    assert " ".join(t.text for t in legend) == " ".join(names)   # nothing dropped
    assert viewbox(parse(svg)).y1 > plot.y1 + 15 * len(legend)   # the picture grew to hold it


def test_a_word_longer_than_the_chart_is_split_not_clipped() -> None:
    chart = Chart("x", "y").series("w" * 200, [(1, 1), (2, 2)])
    assert "".join(_legend(chart.render())) == "w" * 200


@pytest.mark.parametrize(("x", "y"), [(0.001, 0.5), (1000.0, 0.5), (1000.0, 1.0),
                                      (0.001, 0.0), (1.0, 1.0)])
def test_reference_labels_stay_inside_the_frame_at_its_edges(x: float, y: float) -> None:
    chart = Chart("p50 latency (ms)", "accuracy", log_x=True)
    chart.series("candidates", [(0.001, 0.0), (1000.0, 1.0), (1.0, 0.5)])
    chart.vline(x, "p99 objective 12.5 ms")
    chart.vline(x, "a second objective")
    chart.hline(y, "budget floor at the top of the range")
    inside = [t.text for t in assert_laid_out(chart.render()) if t.cls == "inframe"]
    assert len(inside) == 3


def test_a_reference_label_wider_than_the_frame_is_shortened() -> None:
    chart = Chart("x", "y").series("s", [(1, 1), (2, 2)]).hline(1.5, LONG * 2)
    (label,) = [t.text for t in assert_laid_out(chart.render()) if t.cls == "inframe"]
    assert label.endswith("…") and label.startswith(LONG[:40])


@pytest.mark.parametrize("log_y", [False, True])
def test_tick_labels_over_wide_ranges_do_not_collide(log_y: bool) -> None:
    chart = Chart("offered load (QPS)", "p99 latency (ms)", log_x=True, log_y=log_y)
    chart.series("s", [(0.000123, 0.000123), (98765.4321, 98765.4321)])
    chart.series("flat", [(1.23456, 1234567.0), (1.23457, 1234567.5)])
    items = assert_laid_out(chart.render())    # includes: no two labels overlap
    assert sum(t.cls == "" for t in items) >= 6


def test_no_data_is_a_labelled_picture() -> None:
    assert [t.text for t in assert_laid_out(Chart("x", "y").render())] == ["no data"]
