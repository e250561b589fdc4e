"""Verbs that look at and measure a model: inspect, bench-model, advise, demo, kits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from rtinfer.cli._app import (
    DimOpt,
    JsonOpt,
    KitOpt,
    ModelArg,
    QuietOpt,
    SeqOpt,
    ShapeOpt,
    _bytes,
    _dims,
    _ints,
    _model_or_kit,
    _progress,
    _shape,
    _shapes,
    _write_json,
    app,
    console,
    kits_app,
    print_comparison,
)

if TYPE_CHECKING:  # the demo module is imported when the verb runs
    from rtinfer.demo import BeforeAfter


@app.command()
def inspect(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    dim: list[str] | None = DimOpt,
    seq_len: int | None = SeqOpt,
    shape: list[str] | None = typer.Option(
        None, "--shape", help="An input's whole shape to count FLOPs at, e.g. --shape "
        "x=1,3,48,320 (repeatable) [default: the shape of a task's or kit's real test rows; "
        "else free dims = 1]."),
    quant: bool = typer.Option(False, "--quant", help="List each quantized tensor's n, scale, "
                               "zero-point, x_min/x_max and how they map to Q(x)."),
    json_path: Path | None = JsonOpt,
) -> None:
    """Inputs/outputs, parameters, size, op histogram, opsets and FLOPs per sample (at a
    task's or kit's real data shapes, or at --shape / --dim)."""
    from rtinfer.models import import_model
    from rtinfer.models.summary import summarize

    dims, shapes = _dims(dim, seq_len), _shapes(shape)
    path, rows = _model_or_kit(model, kit)
    if quant:
        _inspect_quant(import_model(path), json_path)
        return
    if shapes or dims:
        counted_at = " and ".join(o for o, given in (("--shape", shapes), ("--dim", dims))
                                  if given)
    elif rows is not None:  # a real row's shape: the data's sequence length, image size
        shapes = {k: [1, *v.shape[1:]] for k, v in rows.items()}
        counted_at = f"the shape of the {'task' if kit is None else 'kit'}'s test rows"
    else:
        counted_at = "free dims = 1 (give --shape or --dim)"
    info = summarize(import_model(path), dims, shapes)
    if info["flops"] is not None:
        info["flops"]["counted_at"] = counted_at
    _write_json(json_path, info)
    table = Table(title=f"{info['source']['description']}", show_header=False)
    for t in info["inputs"]:
        table.add_row("input", f"{t['name']}  {t['dtype']}  {_shape(t['shape'])}")
    for t in info["outputs"]:
        table.add_row("output", f"{t['name']}  {t['dtype']}  {_shape(t['shape'])}")
    if info["parameters"] is not None:
        table.add_row("parameters", f"{info['parameters']:,}")
    table.add_row("size on disk", _bytes(info["size_bytes"]))
    table.add_row("opset", ", ".join(f"{d} {v}" for d, v in info["opset"].items())
                  or info.get("format", ""))
    table.add_row("nodes", f"{info['nodes']:,}")
    ops = list(info["op_histogram"].items())
    table.add_row("ops", ", ".join(f"{op} {n}" for op, n in ops[:12])
                  + (f", … {len(ops) - 12} more types" if len(ops) > 12 else ""))
    flops = info["flops"]
    if flops is None:  # a .tflite: LiteRT's op list, no ONNX graph to count
        table.add_row("FLOPs / sample", "not counted (.tflite)")
        console.print(table)
        return
    at = ", ".join(f"{k}{tuple(v)}" for k, v in flops["input_shapes"].items())
    table.add_row("FLOPs / sample", f"{flops['per_sample'] / 1e9:.4g} GFLOP at {at}, "
                  f"from {counted_at}"
                  + (f" ({flops['unresolved_nodes']} nodes unresolved)"
                     if flops["unresolved_nodes"] else ""))
    console.print(table)


def _inspect_quant(model: Any, json_path: Path | None) -> None:
    from rtinfer.optimize import FORMULA, quant_params

    rows = quant_params(model)
    _write_json(json_path, {"formula": FORMULA, "tensors": rows})
    if not rows:
        console.print("no quantized tensors (no DequantizeLinear with stored scales)")
        return
    table = Table(title=f"quantized tensors of {model.source.description}")
    for col in ("tensor", "kind", "type", "n", "form", "scale", "zero-point", "x_min", "x_max"):
        table.add_column(col, justify="right" if col not in ("tensor", "kind") else "left")

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else f"{v['min']:.3g}..{v['max']:.3g}"

    for r in rows:
        table.add_row(r["tensor"], r["kind"], r["dtype"],
                      str(r["n"]), r["form"] + (f" (axis {r['axis']})" if r["per_channel"]
                                                else ""),
                      fmt(r["scale"]), fmt(r["zero_point"]), fmt(r["x_min"]), fmt(r["x_max"]))
    console.print(table)
    console.print(FORMULA, highlight=False)


@app.command("bench-model")
def bench_model_cmd(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    engine: str = typer.Option("onnxruntime", "--engine", "-e", help="Engine name."),
    threads: int | None = typer.Option(None, "--threads", "-t",
                                       help="Intra-op threads [default: usable cores]."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", "-b", help="e.g. 1,8,32"),
    dim: list[str] | None = DimOpt,
    seq_len: int | None = SeqOpt,
    shape: list[str] | None = ShapeOpt,
    window: float = typer.Option(1.0, help="Seconds per measurement window."),
    peak_gflops: float | None = typer.Option(
        None, help="Compute peak for the efficiency column [default: estimated from CPU]."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Cold start, closed-loop latency percentiles, throughput, CPU %, RSS and efficiency."""
    from rtinfer.bench.inprocess import bench_model

    path, inputs = _model_or_kit(model, kit)
    with _progress(quiet) as say:
        result = bench_model(
            path, inputs=inputs, engine=engine, threads=threads, batch_sizes=_ints(batch_sizes),
            dims=_dims(dim, seq_len), shapes=_shapes(shape), window_s=window,
            peak_flops=peak_gflops * 1e9 if peak_gflops else None, progress=say,
        )
    _write_json(json_path, result)
    cold = result["cold_start"]
    eng = result["engine"]
    table = Table(title=f"{eng['engine']}, {eng['threads']} thread(s) — "
                        f"{result['model']['source']['description']}")
    for col in ("batch", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "n", "samples/s", "CPU %",
                "GFLOP/s", "efficiency", "stable"):
        table.add_column(col, justify="right")
    for r in result["results"]:
        lat = r["latency_ms"]
        table.add_row(
            str(r["batch"]), f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
            f"{lat['p99_9']:.3f}", str(lat["n"]), f"{r['throughput']['samples_per_s']:.1f}",
            f"{r['cpu_percent']:.0f}",
            f"{r['achieved_flops_per_s'] / 1e9:.1f}" if r["achieved_flops_per_s"] else "-",
            f"{r['efficiency']:.1%}" if r["efficiency"] else "-",
            "yes" if r["stable"] else f"no ({r['spread']:.0%})",
        )
    console.print(table)
    console.print(
        f"cold start: load {cold['load_s'] * 1e3:.1f} ms, first inference "
        f"{cold['first_inference_s'] * 1e3:.1f} ms · peak RSS "
        f"{_bytes(result['resources']['peak_rss_bytes'])} · percentiles: "
        f"{result['results'][0]['latency_ms']['estimator']} · peak "
        f"{result['peak_flops']['value'] / 1e9:.0f} GFLOP/s ({result['peak_flops']['source']})",
        highlight=False,
    )


@app.command()
def advise(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    goal: str = typer.Option("latency", help="latency or throughput."),
    slo_ms: float | None = typer.Option(None, "--slo-ms", help="p99 objective in ms."),
    engines: str | None = typer.Option(None, help="Comma-separated engines [default: all]."),
    batch: int | None = typer.Option(None, help="Batch size [default: 1 for latency, 32 "
                                                "for throughput]."),
    dim: list[str] | None = DimOpt,
    seq_len: int | None = SeqOpt,
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Measure each available engine at a few thread counts and recommend one."""
    from rtinfer.advisor import advise as run_advise

    path, inputs = _model_or_kit(model, kit)
    with _progress(quiet) as say:
        result = run_advise(
            path, inputs=inputs, goal=goal, slo_ms=slo_ms, batch=batch, dims=_dims(dim, seq_len),
            engines=engines.split(",") if engines else None, progress=say,
        )
    _write_json(json_path, result)
    best = result["recommendation"]
    table = Table(title=f"goal: {goal}" + (f", p99 <= {slo_ms:g} ms" if slo_ms else ""))
    for col in ("engine", "threads", "batch", "p50 ms", "p99 ms", "samples/s", "CPU %",
                "meets SLO"):
        table.add_column(col, justify="right")
    for c in result["candidates"]:
        style = "bold green" if c is best or c == best else None
        table.add_row(c["engine"], str(c["threads"]), str(c["batch"]), f"{c['p50_ms']:.3f}",
                      f"{c['p99_ms']:.3f}", f"{c['samples_per_s']:.1f}",
                      f"{c['cpu_percent']:.0f}", "yes" if c["meets_slo"] else "no", style=style)
    console.print(table)
    console.print(f"[bold]Recommendation:[/] {best['engine']} with {best['threads']} thread(s)")
    for reason in result["reasons"]:
        console.print(f"  • {reason}", highlight=False)
    for name, why in result["skipped"].items():
        console.print(f"  [dim]skipped {name}: {why}[/]", highlight=False)


@app.command()
def compare(
    engines: str | None = typer.Option(None, help="Comma-separated [default: all available]."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sentence (padded)."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", "-b", help="e.g. 1,32"),
    threads: int | None = typer.Option(None, "--threads", "-t"),
    window: float = typer.Option(1.0, help="Seconds per measurement window."),
    rounds: int = typer.Option(3, help="Interleaved measurement rounds per engine."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Compare the available engines on the built-in MiniLM sentence encoder."""
    from rtinfer.bench.builtin import DEMO_SENTENCE, compare_builtin

    with _progress(quiet) as say:
        result = compare_builtin(engines.split(",") if engines else None, seq_len=seq_len,
                          batch_sizes=_ints(batch_sizes), threads=threads, window_s=window,
                          rounds=rounds, progress=say)
    _write_json(json_path, result)
    print_comparison(result, f"all-MiniLM-L6-v2, '{DEMO_SENTENCE}' padded to {seq_len} tokens")


@kits_app.command("list")
def kits_list(json_path: Path | None = JsonOpt) -> None:
    """Each kit with its metric, latency objective and whether it is built."""
    from rtinfer.kits import kit_status

    rows = kit_status()
    _write_json(json_path, {"kits": rows})
    table = Table(title="rtinfer kits")
    for col in ("kit", "description", "metric", "objective p99", "built"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["description"], r["metric"], f"{r['objective_p99_ms']:g} ms",
                      "yes" if r["built"] else "no")
    console.print(table)


@kits_app.command("build")
def kits_build(
    name: str = typer.Argument(..., help="Kit name (see rtinfer kits list)."),
    small: bool = typer.Option(False, "--small", help="Reduced size, for quick checks."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if cached."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Build a kit deterministically (fixed seeds) and cache it; prints its measured quality."""
    from rtinfer import kits

    with _progress(quiet) as say:
        kit = kits.load(name, size="small" if small else "full", force=force, progress=say)
    _write_json(json_path, kit.meta)
    table = Table(title=f"kit '{kit.name}': quality of the float models on the test split")
    metrics = list(next(iter(kit.quality.values())))
    for col in ("model", *metrics):
        table.add_column(col, justify="right")
    for model_name, q in kit.quality.items():
        table.add_row(model_name, *(f"{q[m]:.4f}" for m in metrics))
    console.print(table)
    console.print(f"data: {kit.meta['data']}", highlight=False)
    console.print("splits: " + ", ".join(f"{k} {v:,}" for k, v in kit.meta["splits"].items()),
                  highlight=False)
    for model_name, path in kit.models.items():
        console.print(f"model {model_name}: {path}", highlight=False)
    console.print(f"built in {kit.meta['build_seconds']} s; cached at {kit.path}",
                  highlight=False)


@kits_app.command("show")
def kits_show(
    name: str = typer.Argument(..., help="Kit name (see rtinfer kits list)."),
    size: str = typer.Option("full", "--size", help="full, or small (the --small build)."),
) -> None:
    """Print the built kit as a task file (TOML), described as your own task would be:
    rtinfer kits show fraud > fraud.toml; rtinfer optimize fraud.toml ..."""
    from rtinfer import kits

    if size not in kits.SIZES:
        raise typer.BadParameter(f"--size is one of {list(kits.SIZES)}, got {size!r}")
    # Plain text: rich would read "[model]" as markup.
    typer.echo(kits.task_file(kits.load(name, size=size, build=False)), nl=False)




@app.command()
def demo(
    kit: str = typer.Option("perception", "--kit", help="perception (where the search finds "
                            "a gain), fraud (where the original stays) or intent (longer)."),
    out: Path = typer.Option(Path("demo-repo"), "--out", help="Model repository to write."),
    time_budget: str = typer.Option("4m", "--time-budget", help="For the optimize step."),
    requests: int = typer.Option(200, help="Requests sent to the served model."),
    small: bool = typer.Option(False, "--small", help="The kit's reduced build (quick checks)."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """The main job on a built-in kit: build, optimize, serve on loopback, load, summarise."""
    from rtinfer.cli.optimize import parse_duration, print_optimize
    from rtinfer.demo import BeforeAfter, run_demo

    with _progress(quiet) as say:
        result = run_demo(kit, out=out, time_budget_s=parse_duration(time_budget),
                          requests=requests, size="small" if small else "full", progress=say)
    _write_json(json_path, result)
    print_optimize(result["optimize"])
    s = result["serving"]
    lat = s["latency_ms"]
    console.print(
        f"served {s['model']} at {s['url']} ({s['protocol']}): {s['requests']} requests, "
        f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms over HTTP incl. JSON; answers equal "
        f"in-process within {s['max_abs_diff_vs_in_process']:.1e}; server stopped",
        highlight=False)
    _print_before_after(BeforeAfter.of(result["optimize"]))


def _print_before_after(ba: BeforeAfter) -> None:
    """The demo's answer in one table: the original against the chosen model."""
    table = Table(title=f"before → after: the original against the chosen model "
                        f"({ba.threads} thread(s))", caption=ba.why)
    for col in ("", "original", "chosen"):
        table.add_column(col, justify="left" if not col else "right")
    for row in ba.rows():
        table.add_row(*row)
    console.print(table)
