"""``rtinfer prune`` and ``rtinfer distill``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rtinfer.cli._app import (
    JsonOpt,
    KitOpt,
    MaxDropOpt,
    MinAgreementOpt,
    QuietOpt,
    TaskArg,
    _bytes,
    _progress,
    _write_json,
    app,
    console,
    print_beyond,
    print_checks,
    task_or_kit,
)

OutOpt = typer.Option(None, "--out", help="Model repository to write the artifact into.")
NameOpt = typer.Option(None, help="Model name in the repository [default: KIT-prune / "
                       "KIT-distill].")
ThreadsOpt = typer.Option(2, "--threads", "-t", help="ONNX Runtime threads for the latency "
                          "comparison.")
SecondsOpt = typer.Option(None, "--max-seconds", help="Stop training after this long (the "
                          "result is still evaluated and written).")
SmallOpt = typer.Option(False, "--small", help="Use the kit's reduced build (quick checks).")
MeasureOpt = typer.Option(True, "--measure/--no-measure", help="Measure latency side by side.")


@app.command()
def prune(
    task_file: str | None = TaskArg,
    kit: str | None = KitOpt,
    method: str = typer.Option("magnitude", help="magnitude (weight size) or activation "
                               "(statistics over calibration data; structured only)."),
    amount: float | None = typer.Option(None, help="Share removed, e.g. 0.5 [default 0.5]."),
    threshold: float | None = typer.Option(None, help="Unstructured: zero every |W| <= this."),
    scope: str = typer.Option("global", help="global (rank across layers) or layer."),
    structured: bool = typer.Option(False, "--structured/--unstructured", help="Remove "
                                    "channels/neurons (faster) or zero single weights."),
    statistic: str = typer.Option("mean_abs", help="Activation statistic: mean_abs or zeros."),
    heads: bool = typer.Option(False, "--heads", help="Transformers: remove attention heads."),
    steps: int = typer.Option(1, help="Iterative schedule: reach --amount in this many steps."),
    finetune_steps: int = typer.Option(0, help="Fine-tuning steps after each pruning step."),
    lr: float = typer.Option(1e-3, help="Fine-tuning learning rate."),
    teacher_weight: float = typer.Option(0.7, help="Share of the fine-tuning loss that is the "
                                         "original's soft targets (0 = labels only)."),
    image_size: int | None = typer.Option(None, help="Images: measure latency at this size."),
    max_seconds: float | None = SecondsOpt,
    small: bool = SmallOpt,
    measure: bool = MeasureOpt,
    max_drop: str | None = MaxDropOpt,
    min_agreement: float | None = MinAgreementOpt,
    threads: int = ThreadsOpt,
    out: Path | None = OutOpt,
    name: str | None = NameOpt,
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prune a task's or kit's model, fine-tune, evaluate against the original, measure,
    write."""
    from rtinfer.optimize import Prune
    from rtinfer.optimize import prune as run

    config = Prune(method=method, amount=amount, threshold=threshold, scope=scope,
                   structured=structured, statistic=statistic, heads=heads, steps=steps,
                   finetune_steps=finetune_steps, lr=lr, teacher_weight=teacher_weight,
                   max_seconds=max_seconds)
    with _progress(quiet) as say:
        result = run(kit=_kit(task_file, kit), config=config, out=out, name=name, threads=threads,
                     image_size=image_size, size="small" if small else "full",
                     measure=measure, budget=_budget(max_drop, min_agreement), progress=say)
    _render(result.report, config.describe(), json_path)
    sparsity = result.report.get("sparsity")
    if sparsity:
        table = Table(title="sparsity per layer")
        for col in ("layer", "shape", "zeros", "sparsity"):
            table.add_column(col, justify="right")
        for row in sparsity["layers"]:
            table.add_row(row["layer"], "x".join(map(str, row["shape"])), f"{row['zeros']:,}",
                          f"{row['sparsity']:.1%}")
        console.print(table)
        console.print(f"total sparsity {sparsity['sparsity']:.1%} of {sparsity['weights']:,} "
                      "weights; dense kernels still multiply the zeros", highlight=False)


@app.command()
def distill(
    task_file: str | None = TaskArg,
    kit: str | None = KitOpt,
    steps: int = typer.Option(600, help="Distillation steps (KL to the teacher + CE)."),
    finetune_steps: int = typer.Option(100, help="Then fine-tuning steps on labels."),
    temperature: float = typer.Option(4.0, help="Softening temperature T."),
    alpha: float = typer.Option(0.5, help="Weight of the teacher's soft targets vs labels."),
    layers: float = typer.Option(0.5, help="Share of transformer layers the student keeps."),
    width: float = typer.Option(1.0, help="Share of FFN neurons the student keeps."),
    lr: float = typer.Option(1e-4, help="Learning rate."),
    balance: float = typer.Option(0.0, help="Draw rare classes more often: 0 = as they come, "
                                  "0.5 = by the square root of their share, 1 = equally."),
    max_seconds: float | None = SecondsOpt,
    small: bool = SmallOpt,
    measure: bool = MeasureOpt,
    max_drop: str | None = MaxDropOpt,
    min_agreement: float | None = MinAgreementOpt,
    threads: int = ThreadsOpt,
    out: Path | None = OutOpt,
    name: str | None = NameOpt,
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Distill a task's or kit's model into a smaller student, evaluate, measure, write."""
    from rtinfer.optimize import Distill
    from rtinfer.optimize import distill as run

    config = Distill(steps=steps, finetune_steps=finetune_steps, temperature=temperature,
                     alpha=alpha, layers=layers, width=width, lr=lr, max_seconds=max_seconds,
                     balance=balance)
    with _progress(quiet) as say:
        result = run(kit=_kit(task_file, kit), config=config, out=out, name=name, threads=threads,
                     size="small" if small else "full", measure=measure,
                     budget=_budget(max_drop, min_agreement), progress=say)
    _render(result.report, config.describe(), json_path)


def _kit(task_file: str | None, kit: str | None) -> Any:
    """The loaded task, or the kit's name; exactly one of them."""
    if (task_file is None) == (kit is None):
        raise typer.BadParameter("give a task file (task.toml) or --kit NAME (one of them)")
    if task_file is not None and not task_file.endswith(".toml"):
        raise typer.BadParameter(f"'{task_file}' is not a task file (task.toml); for a kit "
                                 f"use --kit {task_file}")
    return task_or_kit(task_file, kit)[1] if task_file is not None else kit


def _budget(max_drop: str | None, min_agreement: float | None) -> Any:
    """The budget options as a Budget (its headline is the kit's metric), or None for the
    default."""
    if max_drop is None and min_agreement is None:
        return None
    from rtinfer.optimize.budget import Budget

    return Budget.from_options(max_drop, headline="", min_agreement=min_agreement)


def _render(report: dict[str, Any], title: str, json_path: Path | None) -> None:
    _write_json(json_path, report)
    held, metric = report["held_out"], report["metric"]
    label = next(k for k in held if k not in ("original", "fidelity", "samples", "drop",
                                              "budget", "beyond_split"))
    perf = report.get("performance", {}).get("models", {})
    table = Table(title=title)
    for col in ("model", metric, "parameters", "ONNX size", "p50 ms", "speedup"):
        table.add_column(col, justify="right")
    for key in ("original", label):
        size = report["size"][key]
        row = perf.get(key, {})
        table.add_row(key, f"{held[key][metric]:.4f}", f"{size['parameters']:,}",
                      _bytes(size["onnx_bytes"]),
                      f"{row['p50_ms']:.2f}" if row else "-",
                      f"{row['speedup']:.2f}x" if row else "-")
    console.print(table)
    if "drop" in held:
        console.print(f"held-out {metric} drop: {100 * held['drop']:.2f} points on "
                      f"{held['samples']:,} test samples", highlight=False)
    print_checks(held["budget"]["checks"], "the budget on the held-out test split: "
                 + ("every limit holds" if report["status"] == "ok" else "OVER BUDGET"))
    print_beyond(held.get("beyond_split"), label)
    for out, fid in held["fidelity"].items():
        if "top1_agreement" in fid:
            console.print(f"top-1 agreement with the original ({out}) on held-out data: "
                          f"{fid['top1_agreement']:.4f}", highlight=False)
    if "performance" in report:
        p = report["performance"]
        console.print(f"latency: ONNX Runtime, {p['threads']} threads, input "
                      f"{p['input_shapes']}; {p['method']}", highlight=False)
    if "message" in report:
        console.print(f"[bold yellow]{report['message']}[/]", highlight=False)
    if "artifact" in report:
        console.print(f"wrote {report['artifact']}", highlight=False)
