"""``rtinfer optimize``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rtinfer.cli._app import (
    DataOpt,
    ExtraEvalOpt,
    JsonOpt,
    KitOpt,
    MaxDropOpt,
    MetricOpt,
    MinAgreementOpt,
    ModelArg,
    QuietOpt,
    _progress,
    _shapes,
    _write_json,
    app,
    console,
    print_beyond,
    print_checks,
    task_or_kit,
)
from rtinfer.cli.bench import REPORTERS


def _optimize_report(results: list[dict[str, Any]], title: str) -> str:
    """``rtinfer report optimize.json --html OUT`` renders a search again (one result)."""
    from rtinfer.optimize.report import render_html

    if len(results) != 1:
        raise typer.BadParameter("an optimize report shows one search; give one optimize.json")
    return render_html(results[0])


REPORTERS["optimize"] = _optimize_report


@app.command()
def optimize(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    data: Path | None = DataOpt,
    max_drop: str | None = MaxDropOpt,
    min_agreement: float | None = MinAgreementOpt,
    extra_eval: Path | None = ExtraEvalOpt,
    metric: str | None = MetricOpt,
    slo_p99_ms: float | None = typer.Option(None, "--slo-p99-ms", help="p99 objective (ms) "
                                            "[default: a task file's objective.p99_ms]."),
    goal: str | None = typer.Option(None, help="latency (batch 1) or throughput (batch 32) "
                                    "[default: a task file's objective, else latency]."),
    time_budget: str = typer.Option("15m", "--time-budget", help="e.g. 90s, 15m, 1h."),
    engines: str | None = typer.Option(None, help="Comma-separated [default: all installed]."),
    threads: int | None = typer.Option(None, "--threads", "-t"),
    out: Path | None = typer.Option(None, "--out", help="Model repository to write into."),
    name: str | None = typer.Option(None, help="Model name in the repository."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore saved progress of this search."),
    window: float = typer.Option(0.5, "--window", min=0.01, help="Seconds per quick-latency "
                                 "window (up to 3 per candidate and engine; the final rounds "
                                 "use twice this, within the time budget)."),
    shape: list[str] | None = typer.Option(
        None, "--shape", help="The deployment's input size when the data's differs, e.g. "
        "--shape image=1,3,224,224 (repeatable; whole shape, batch first): latency is "
        "measured on the real test rows resized to it, accuracy on the data as given."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Find the fastest variant within an accuracy budget, prove it, write it and a report."""
    from rtinfer.optimize.search import optimize as run_optimize

    model, task = task_or_kit(model, kit)
    with _progress(quiet) as say:
        result = run_optimize(
            model, kit=task, data=data, max_drop=max_drop, metric=metric,
            min_agreement=min_agreement, extra_eval=extra_eval, slo_p99_ms=slo_p99_ms,
            goal=goal, time_budget_s=parse_duration(time_budget),
            engines=engines.split(",") if engines else None, threads=threads, out=out,
            name=name, window_s=window, resume=not fresh, shapes=_shapes(shape), progress=say)
    _write_json(json_path, result)
    print_optimize(result)


@app.command()
def replay(
    version: Path = typer.Argument(..., help="A version folder, e.g. repo/intent/3."),
    task: str | None = typer.Option(None, "--task", help="The task file it was made from."),
    kit: str | None = typer.Option(None, "--kit", help="The kit it was made from (at the "
                                   "size its manifest records)."),
    threads: int | None = typer.Option(None, "--threads", "-t"),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Rebuild a version from its manifest's recipe and check it is the same model."""
    from rtinfer.optimize.replay import replay as run_replay

    if (task is None) == (kit is None):
        raise typer.BadParameter("give the task the version was made from: --task task.toml "
                                 "or --kit NAME (one of them)")
    _, loaded = task_or_kit(task, kit)
    if isinstance(loaded, str):  # a kit, at the size the version was made from
        from rtinfer import kits
        from rtinfer.deploy.artifact import load_artifact

        made_from = load_artifact(version).manifest.get("task") or {}
        loaded = kits.load(loaded, size=made_from.get("size") or "full", build=False)
    elif loaded is None:
        raise typer.BadParameter(f"{task} is not a task file (a .toml with [model] and [data])")
    with _progress(quiet) as say:
        result = run_replay(version, loaded, threads=threads, progress=say)
    _write_json(json_path, result)
    console.print(f"recipe: {result['describe']}", highlight=False)
    if "warning" in result:
        console.print(f"[bold yellow]{result['warning']}[/]", highlight=False)
    outputs = result["outputs"]
    worst = min((row["cosine_min"] for row in outputs["fidelity"].values()), default=1.0)
    console.print(f"same files (sha256): {'yes' if result['same_hash'] else 'no'}; outputs on "
                  f"the test split ({outputs['samples']} samples, {outputs['engine']}): worst "
                  f"cosine {worst:.6f}", highlight=False)
    if not result["equal"]:
        console.print("[bold red]the rebuilt model differs from the version beyond the "
                      f"tolerance {outputs['tolerance']}[/]", highlight=False)
        raise typer.Exit(1)
    console.print("[bold green]the recipe rebuilds this version[/]", highlight=False)


def print_optimize(result: dict[str, Any]) -> None:
    """The candidate table and the verdict (shared with ``rtinfer demo``)."""
    metric = result["budget"]["metric"]
    table = Table(title=f"candidates — {result['budget']['text']}; batch {result['batch']}, "
                        f"{result['threads']} thread(s)")
    for col in ("candidate", metric, "within budget (or: limits broken)", "p50 ms", "p99 ms",
                "samples/s",
                "vs original ORT", "size MiB"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    base = result["float_metrics"].get(metric, 1.0)
    for r in result["candidates"]:
        fin, quick = r["final"], r["quick"]
        lat = fin["latency_ms"] if fin else {"p50": quick.get("p50_ms"),
                                             "p99": quick.get("p99_ms")}
        sps = fin["samples_per_s"] if fin else quick.get("samples_per_s")
        table.add_row(
            r["id"], f"{base - r['validation']['drop']:.4f}",
            "yes" if r["validation"]["within_budget"] else
            ", ".join(r["validation"].get("excluded_by") or ["no"]),
            _f(lat["p50"], 3), _f(lat["p99"], 3), _f(sps, 1),
            f"{fin['speedup_vs_original_ort']:.2f}x" if fin else "-",
            f"{r['size_bytes'] / 2**20:.2f}", style="bold green" if r["chosen"] else None)
    console.print(table)
    c = result["chosen"]
    console.print(f"[bold]Chosen:[/] {c['id']} — {c['why']}", highlight=False)
    extra = f", {c['speedup_vs_torch_eager']:.2f}x PyTorch eager" if (
        "speedup_vs_torch_eager" in c) else ""
    console.print(f"  p50 {c['latency_ms']['p50']:.3f} ms, p99 {c['latency_ms']['p99']:.3f} ms; "
                  f"{c['speedup_vs_original_ort']:.2f}x the original on ONNX Runtime{extra}",
                  highlight=False)
    chosen_row = next(r for r in result["candidates"] if r["chosen"])
    print_checks(chosen_row["validation"]["checks"],
                 f"{c['id']}: the budget on the validation split (what chose it)")
    held = result.get("held_out", {})
    if "budget" in held:
        print_checks(held["budget"]["checks"], f"{c['id']}: the same limits on the held-out "
                     f"test split ({held['samples']} samples; reported, not used to choose)")
    if "original" in held:
        console.print("  held-out test: " + ", ".join(
            f"{k} {held['original'][k]:.4f} → {held['chosen'][k]:.4f}"
            for k in held["original"]), highlight=False)
    print_beyond(held.get("beyond_split"), "chosen")
    for s in result["skipped"]:
        console.print(f"  [dim]not tried: {s['variant']} ({s['why']})[/]", highlight=False)
    console.print(f"  search: {result['elapsed_s']:.0f} s of {result['time_budget_s']:.0f} s"
                  + (f"; resumed {', '.join(result['resumed_variants'])}"
                     if result["resumed_variants"] else ""), highlight=False)
    if "artifact" in result:
        console.print(f"wrote {result['artifact']}\nreport: {result['report']}", highlight=False)


def parse_duration(text: str) -> float:
    """Seconds in '90s', '15m', '1h' or a plain number of seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"time budget {text!r}: give e.g. 90s, 15m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _f(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
