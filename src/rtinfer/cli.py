"""The ``rtinfer`` command: parse, call the public API, render with rich. Nothing more.

Every verb that measures writes its result dict with ``--json PATH`` as well as a table.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from rtinfer.errors import RtinferError

app = typer.Typer(
    name="rtinfer",
    help="Import, measure, choose an engine for, and (soon) optimize and serve models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide; when output is not a terminal (CI logs, make demo | tee) rich would wrap at
# 80 columns, so give it room.
kits_app = typer.Typer(help="Ready-made scenarios (model + data + metric + objective).",
                       no_args_is_help=True)
app.add_typer(kits_app, name="kits")
console = Console() if sys.stdout.isatty() else Console(width=140)
err_console = Console(stderr=True)

JsonOpt = typer.Option(None, "--json", help="Also write the full result as JSON to this path.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress output.")
DimOpt = typer.Option(
    None, "--dim", help="Size of a symbolic dimension, e.g. --dim sequence=128 (repeatable)."
)
SeqOpt = typer.Option(None, "--seq-len", help="Shorthand for --dim sequence=L.")
KitOpt = typer.Option(None, "--kit", help="Use a kit's float model and real test inputs.")
ModelArg = typer.Argument(None, help="ONNX file, artifact, model folder or HF folder.")


def main() -> None:
    """Console entry point: rtinfer's own errors print as one clear line, exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Third-party progress bars and advisories would interleave with rich's output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app()
    except (RtinferError, ValueError, TypeError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(2) from None


@app.command()
def inspect(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    dim: list[str] | None = DimOpt,
    seq_len: int | None = SeqOpt,
    quant: bool = typer.Option(False, "--quant", help="List each quantized tensor's n, scale, "
                               "zero-point, x_min/x_max and how they map to Q(x)."),
    json_path: Path | None = JsonOpt,
) -> None:
    """Inputs/outputs, parameters, size, op histogram, opsets and FLOPs per sample."""
    from rtinfer.models import import_model
    from rtinfer.models.summary import summarize

    dims = _dims(dim, seq_len)
    path, _ = _model_or_kit(model, kit)
    if quant:
        _inspect_quant(import_model(path), json_path)
        return
    info = summarize(import_model(path), dims)
    _write_json(json_path, info)
    table = Table(title=f"{info['source']['description']}", show_header=False)
    for t in info["inputs"]:
        table.add_row("input", f"{t['name']}  {t['dtype']}  {_shape(t['shape'])}")
    for t in info["outputs"]:
        table.add_row("output", f"{t['name']}  {t['dtype']}  {_shape(t['shape'])}")
    table.add_row("parameters", f"{info['parameters']:,}")
    table.add_row("size on disk", _bytes(info["size_bytes"]))
    table.add_row("opset", ", ".join(f"{d} {v}" for d, v in info["opset"].items()))
    table.add_row("nodes", f"{info['nodes']:,}")
    ops = list(info["op_histogram"].items())
    table.add_row("ops", ", ".join(f"{op} {n}" for op, n in ops[:12])
                  + (f", … {len(ops) - 12} more types" if len(ops) > 12 else ""))
    flops = info["flops"]
    shapes = ", ".join(f"{k}{tuple(v)}" for k, v in flops["input_shapes"].items())
    table.add_row("FLOPs / sample", f"{flops['per_sample'] / 1e9:.4g} GFLOP at {shapes}"
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


@app.command()
def quantize(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    data: Path | None = typer.Option(None, "--data", help=".npz with arrays named after the "
                                     "inputs (+ optional 'labels'): half calibrate, half "
                                     "validate."),
    method: str = typer.Option("static", help="static or dynamic."),
    engine: str = typer.Option("onnxruntime", help="Whose quantizer: onnxruntime or openvino "
                               "(NNCF); the result also runs on that engine."),
    preset: str = typer.Option("default", help="default or transformer (NNCF's preset)."),
    calibration: str = typer.Option("minmax", help="minmax, entropy or percentile."),
    calib_samples: int = typer.Option(128, help="Calibration samples."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor"),
    max_drop: str | None = typer.Option(None, help="Budget, absolute '0.5pt' or relative "
                                        "'1%'; layers are kept in float until it holds."),
    metric: str | None = typer.Option(None, help="Budget metric [default: the kit's; without "
                                      "labels <output>.cosine]."),
    threads: int | None = typer.Option(None, "--threads", "-t"),
    out: Path | None = typer.Option(None, "--out", help="Model repository to write into."),
    name: str | None = typer.Option(None, help="Model name in the repository."),
    report: bool = typer.Option(False, "--report", help="Show the sensitivity ranking."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Calibrate, quantize to int8 under an accuracy budget, verify, measure, write."""
    from rtinfer.optimize import Quantize
    from rtinfer.optimize.run import run_quantize

    config = Quantize(method=method, engine=engine, preset=preset, calibration=calibration,
                      calib_samples=calib_samples, per_channel=per_channel)
    with _progress(quiet) as say:
        result = run_quantize(model, kit=kit, data=data, config=config, max_drop=max_drop,
                              metric=metric, threads=threads, out=out, name=name,
                              progress=say)
    _write_json(json_path, result)
    table = Table(title=f"{config.describe()} — {result['budget']['text']}")
    for col in ("step", "budget metric drop", "within budget"):
        table.add_column(col)
    for step in result["steps"]:
        drop = "failed" if step["drop"] is None else f"{step['drop']:.4f}"
        table.add_row(step["what"], drop, "yes" if step["within_budget"] else "no")
    console.print(table)
    if report and result["sensitivity"]:
        sens = Table(title="sensitivity: harm when only this layer is quantized "
                           "(1 - mean cosine on the most-disagreeing samples)")
        for col in ("layer", "harm", "worst cosine", "SQNR dB"):
            sens.add_column(col, justify="right")
        for r in result["sensitivity"][:20]:
            sens.add_row(r["node"], f"{r['harm']:.2e}", f"{r['cosine_min']:.4f}",
                         f"{r['sqnr_db']:.1f}")
        console.print(sens)
    if result["kept_in_float"]:
        console.print(f"kept in float: {', '.join(result['kept_in_float'])}", highlight=False)
    if "held_out" in result:
        held = result["held_out"]
        for label in ("float", "int8"):
            if label in held:
                console.print(f"{label} on held-out data: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in held[label].items()), highlight=False)
        for output, fid in held["fidelity"].items():
            console.print(f"fidelity of {output}: worst cosine {fid['cosine_min']:.4f}, "
                          f"mean {fid['cosine_mean']:.4f}, SQNR {fid['sqnr_db']:.1f} dB",
                          highlight=False)
        perf = result["performance"]
        console.print(f"latency at batch 1 on {perf['engine']}: float "
                      f"{perf['p50_ms']['float']:.2f} ms, int8 {perf['p50_ms']['int8']:.2f} ms "
                      f"p50 → {perf['speedup']:.2f}x", highlight=False)
    if "message" in result:
        console.print(f"[bold yellow]{result['message']}[/]", highlight=False)
    if "artifact" in result:
        console.print(f"wrote {result['artifact']}", highlight=False)
    if result["status"] != "ok":
        raise typer.Exit(1)


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
            dims=_dims(dim, seq_len), window_s=window,
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
    from rtinfer.advise import advise as run_advise

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
def demo(
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
    from rtinfer.demo import DEMO_SENTENCE, run_demo

    with _progress(quiet) as say:
        result = run_demo(engines.split(",") if engines else None, seq_len=seq_len,
                          batch_sizes=_ints(batch_sizes), threads=threads, window_s=window,
                          rounds=rounds, progress=say)
    _write_json(json_path, result)
    print_comparison(result, f"all-MiniLM-L6-v2, '{DEMO_SENTENCE}' padded to {seq_len} tokens")


@app.command()
def serve(
    repo: Path = typer.Argument(..., help="Model repository (<repo>/<name>/<version>/)."),
    host: str = typer.Option("127.0.0.1", help="Bind address; loopback unless you say so."),
    port: int = typer.Option(8000),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RTINFER_API_KEY",
                                       help="Require this key on inference requests."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    max_body_mb: float = typer.Option(64.0, help="Largest accepted request body."),
    engine: str | None = typer.Option(None, "--engine", "-e"),
    threads: int | None = typer.Option(None, "--threads", "-t"),
    max_batch_size: int = typer.Option(0, help="Dynamic batching: rows per batch (0: off)."),
    max_queue_delay_us: int = typer.Option(0, help="How long the oldest request may wait "
                                           "for others to join its batch."),
    max_queue_size: int = typer.Option(256, help="Queued requests before 503."),
) -> None:
    """Serve a model repository over the Open Inference Protocol (KServe v2) HTTP API."""
    import uvicorn

    from rtinfer.serve import BatchingConfig, create_app, load_repository

    key = api_key_file.read_text().strip() if api_key_file else api_key
    batching = (BatchingConfig(max_batch_size=max_batch_size,
                               max_queue_delay_us=max_queue_delay_us,
                               max_queue_size=max_queue_size) if max_batch_size else None)
    app_ = create_app(load_repository(repo, engine=engine, threads=threads), api_key=key,
                      max_body_bytes=int(max_body_mb * (1 << 20)), batching=batching)
    err_console.print(f"serving {sorted(app_.state.models)} on http://{host}:{port}",
                      highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


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


def _model_or_kit(model: str | None, kit: str | None) -> tuple[str, dict[str, Any] | None]:
    """The model path to use and, for a kit, 64 rows of its real test inputs."""
    if (model is None) == (kit is None):
        raise typer.BadParameter("give either MODEL or --kit NAME (one of them)")
    if kit is None:
        return str(model), None
    from rtinfer import kits

    loaded = kits.load(kit, build=False)
    test = loaded.split("test")
    return str(loaded.model_path), {k: v[:64] for k, v in test.inputs.items()}


def print_comparison(result: dict[str, Any], title: str) -> None:
    """The engine comparison table shared by ``demo`` and the benchmarks."""
    table = Table(title=title)
    for col in ("engine", "batch", "p50 ms", "p99 ms", "n", "samples/s", "CPU %",
                f"speedup vs {result['baseline']}", "max |diff| vs baseline"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        diff = max(r["max_abs_diff_vs_baseline"].values())
        table.add_row(r["engine"], str(r["batch"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      str(r["n"]), f"{r['samples_per_s']:.1f}", f"{r['cpu_percent']:.0f}",
                      f"{r['speedup_vs_baseline']:.2f}x", f"{diff:.1e}")
    console.print(table)
    env = result["environment"]
    console.print(f"CPU: {env['cpu']['model']} ({env['cpu']['usable_cores']} usable cores, "
                  f"{', '.join(env['cpu']['flags'])}); threads: "
                  f"{next(iter(result['engines'].values()))['threads']}; percentiles: numpy "
                  f"linear (type 7) pooled over {result['rounds']} interleaved rounds; speedup: "
                  "median of per-round p50 ratios; closed loop, one request at a time",
                  highlight=False)


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str], None]]:
    """A progress line on stderr; messages that say "i/n" (epochs, sentences, layers) drive
    a bar, the others just update its text."""
    if quiet:
        yield lambda _msg: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def update(msg: str) -> None:
            m = re.search(r"(\d[\d,]*)/(\d[\d,]*)", msg)
            if m:
                done, total = (int(g.replace(",", "")) for g in m.groups())
                bar.update(task, description=msg, completed=done, total=max(total, 1))
            else:
                bar.update(task, description=msg, completed=0, total=None)

        yield update


def _dims(dim: list[str] | None, seq_len: int | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in dim or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise typer.BadParameter(f"--dim takes NAME=SIZE (e.g. sequence=128), got {item!r}")
        out[name.strip()] = int(value)
    if seq_len is not None:
        out["sequence"] = seq_len
    return out


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected positive integers, got {text!r}")
    return values


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    err_console.print(f"wrote {path}", highlight=False)


def _shape(shape: list[Any]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


if __name__ == "__main__":
    main()
