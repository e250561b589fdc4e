"""The Typer app, shared options and the small renderers every verb uses."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="rtinfer",
    help="Import models, choose an engine, optimize within an accuracy budget (quantize, "
         "prune, distill), serve over KServe v2 / TF Serving / gRPC, and load-test.",
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
ShapeOpt = typer.Option(
    None, "--shape", help="An input's whole shape for synthetic inputs, e.g. --shape "
    "x=1,3,48,320 (repeatable; a dynamic first axis takes the batch size).")
KitOpt = typer.Option(None, "--kit", help="Use a kit's float model and real test inputs.")
DataOpt = typer.Option(None, "--data", help=".npz with arrays named after the inputs (+ optional "
                       "'labels'): half calibrate, half validate.")
MetricOpt = typer.Option(None, help="Budget metric [default: the kit's; without labels "
                         "<output>.cosine]: a task metric, <output>.cosine|top1 (fidelity "
                         "to float), or your own as package.module:function(targets, "
                         "outputs).")
ModelArg = typer.Argument(None, help="A task file (task.toml: your model, data and metric), "
                          "ONNX file, artifact, model folder or HF folder.")
TaskArg = typer.Argument(None, help="A task file (task.toml: your model, data and metric); "
                         "or --kit NAME.")
MaxDropOpt = typer.Option(
    None, "--max-drop", help="Budget: '1pt' (absolute) or '1%' (relative) on every metric the "
    "task declares, or per metric: 'accuracy=1pt,macro_f1=1pt' (also <output>.cosine, top1, "
    "class_recall) [default: 1% of each; no class's recall down more than 5pt; top-1 "
    "agreement with the original >= 0.98].")
ExtraEvalOpt = typer.Option(
    None, "--extra-eval", help=".npz (arrays named after the inputs, optional 'labels') "
    "reported beside the held-out split and never used to choose [default: the kit's own "
    "set from outside its split rule].")
MinAgreementOpt = typer.Option(
    None, "--min-agreement", help="Least share of samples whose top-1 class equals the "
    "original's [default: 0.98 for outputs with a class axis; 0 turns it off].")


def print_beyond(beyond: dict[str, Any] | None, label: str) -> None:
    """One line on the kit's evaluation set from outside its split rule."""
    if not beyond:
        return
    metrics = ", ".join(f"{k} {beyond['original'][k]:.4f} → {beyond['candidate'][k]:.4f}"
                        for k in beyond["original"]) or "no labels"
    agree = (f"; top-1 agreement with the original {beyond['agreement']:.4f}"
             if "agreement" in beyond else "")
    console.print(f"  beyond the split ({beyond['what']}; reported, not used to choose): "
                  f"original → {label}: {metrics}{agree}", highlight=False)


def print_checks(checks: list[dict[str, Any]], title: str) -> None:
    """Each limit of a budget with the original's value, the candidate's and what was allowed."""
    table = Table(title=title)
    for col in ("limit", "original", "result", "drop", "allowed", "holds"):
        table.add_column(col, justify="left" if col == "limit" else "right")
    for c in checks:
        table.add_row(c["limit"] + (f" — {c['note']}" if c["note"] else ""),
                      f"{c['original']:.4f}", f"{c['value']:.4f}", f"{c['drop']:+.4f}",
                      f"{c['allowed']:.4f}", "yes" if c["ok"] else "[bold red]no[/]")
    console.print(table)



def task_or_kit(model: str | None, kit: str | None) -> tuple[str | None, Any]:
    """(model, kit) for a job: a task file given as MODEL is loaded (checked before any long
    work) and takes the kit's place."""
    from rtinfer.tasks import is_task_file
    from rtinfer.tasks import load as load_task

    if model is not None and is_task_file(model):
        if kit is not None:
            raise typer.BadParameter("give a task file or --kit NAME, not both")
        return None, load_task(model)
    return model, kit


def _model_or_kit(model: str | None, kit: str | None) -> tuple[Any, dict[str, Any] | None]:
    """The model to use and, for a kit or a task file, 64 rows of its real test inputs."""
    if (model is None) == (kit is None):
        raise typer.BadParameter("give either MODEL or --kit NAME (one of them)")
    _, task = task_or_kit(model, kit)
    if task is not None and not isinstance(task, str):  # a task file: its model, its data
        test = task.split("test")
        return task.original_model(), {k: v[:64] for k, v in test.inputs.items()}
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


def _shapes(items: list[str] | None) -> dict[str, list[int]]:
    """``--shape x=1,3,48,320`` (repeatable) as {name: dims}."""
    out: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--shape takes NAME=D0,D1,... (e.g. x=1,3,48,320), got "
                                     f"{item!r}")
        out[name.strip()] = _ints(dims)
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
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False),
                    encoding="utf-8")
    err_console.print(f"wrote {path}", highlight=False)


def _shape(shape: list[Any]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


