"""``rtinfer bench`` (load tests on MLPerf LoadGen or rtinfer's open loop, sweeps) and
``rtinfer report``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rtinfer.cli._app import JsonOpt, QuietOpt, _ints, _progress, _write_json, app, console

# ``rtinfer report`` dispatches on the results' ``kind``; other verbs' reports join here.
REPORTERS: dict[str, Callable[[list[dict[str, Any]], str], str]] = {}


def _load_report(results: list[dict[str, Any]], title: str) -> str:
    from rtinfer.bench.report import load_report

    return load_report(results, title)


REPORTERS.update({"loadgen": _load_report, "loadgen-sweep": _load_report})


@app.command()
def bench(
    target: str = typer.Argument(..., help="Model (ONNX file, artifact, repository model "
                                 "folder) run in-process, or a server URL: "
                                 "http://HOST:PORT/v2/models/NAME (KServe v2), "
                                 ".../v1/models/NAME (TF Serving REST) or "
                                 "grpc://HOST:PORT/NAME (KServe v2 over gRPC)."),
    scenario: str = typer.Option("server", help="single-stream | multi-stream | server | "
                                 "offline"),
    qps: float | None = typer.Option(None, help="Offered load (server: Poisson arrivals; "
                                     "past the target's capacity the run still ends on "
                                     "time, INVALID, with the capacity it measured)."),
    slo_p99_ms: float | None = typer.Option(None, "--slo-p99-ms", help="Latency objective "
                                            "at p99 (default: the kit's)."),
    duration: float = typer.Option(10.0, help="Run length in seconds (longer only until "
                                   "--min-queries are scheduled; server: issuing stops "
                                   "then, queries not issued by then are counted)."),
    min_queries: int | None = typer.Option(None, help="Minimum queries (default 662, what "
                                           "LoadGen's early stopping needs for p99)."),
    kit: str | None = typer.Option(None, "--kit", help="Samples from a kit's test split."),
    kit_size: str = typer.Option("full", help="Kit build size (full or small)."),
    data: Path | None = typer.Option(None, "--data", help=".npz of input arrays."),
    name: str | None = typer.Option(None, "--name", help="Series name in reports."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the run's logs "
                                    "(default: beside --json, else results/bench-<time>)."),
    engine: str | None = typer.Option(None, "--engine", "-e"),
    threads: int | None = typer.Option(None, "--threads", "-t"),
    instances: int | None = typer.Option(None, help="In-process model instances."),
    max_batch_size: int | None = typer.Option(None, help="In-process dynamic batching."),
    max_queue_delay_us: int = typer.Option(0),
    concurrency: int | None = typer.Option(None, help="Requests in flight at most (worker "
                                           "threads; HTTP default 8)."),
    batch: int | None = typer.Option(None, help="Samples of one query joined per call."),
    encoding: str = typer.Option("auto", help="KServe v2 tensors: auto (binary when the "
                                 "server advertises it), binary or json."),
    sweep: bool = typer.Option(False, "--sweep", help="Find the highest QPS within the "
                               "objective across threads, instances and batching."),
    sweep_threads: str = typer.Option("1,2"),
    sweep_instances: str = typer.Option("1,2"),
    sweep_batch: str = typer.Option("1,8", help="Max batch sizes (1: no batching)."),
    sweep_delay_us: str = typer.Option("0,2000"),
    write_config: bool = typer.Option(False, "--write-config", help="With --sweep: write the "
                                      "winner into the model's config.pbtxt."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Load-test a model or server against a p99 objective (MLPerf LoadGen; server: an open
    loop that stays bounded in time and memory past capacity)."""
    from rtinfer.bench.samples import load_samples

    if kit and slo_p99_ms is None:
        from rtinfer import kits

        slo_p99_ms = kits.recipe(kit).objective_p99_ms
    folder = out or (json_path.with_name(json_path.stem + "-loadgen") if json_path else
                     Path("results") / time.strftime("bench-%Y%m%d-%H%M%S"))
    if sweep:
        if target.startswith(("http", "grpc://")):
            raise typer.BadParameter("--sweep serves the model itself: give a model, not a URL")
        if slo_p99_ms is None:
            raise typer.BadParameter("--sweep needs --slo-p99-ms (or a --kit's objective)")
        spec = None
        if kit is None and data is None:
            from rtinfer.models import import_model

            spec = import_model(target).spec
        _sweep(target, load_samples(kit=kit, data=data, spec=spec, kit_size=kit_size),
               slo_p99_ms, folder,
               duration, engine, [_ints(x) for x in (sweep_threads, sweep_instances,
                                                     sweep_batch)],
               [int(x) for x in sweep_delay_us.split(",")], write_config, json_path, quiet,
               f"--kit {kit}" if kit else f"--data {data}" if data else "")
        return
    from rtinfer.bench.loadgen import LoadSpec, run_loadgen
    from rtinfer.bench.targets import open_target

    load = LoadSpec(scenario, qps=qps, slo_p99_ms=slo_p99_ms, duration_s=duration,
                    min_queries=min_queries, batch=batch)
    settings = _serving_settings(target, threads, instances, max_batch_size,
                                 max_queue_delay_us)
    if encoding not in ("auto", "binary", "json"):
        raise typer.BadParameter(f"--encoding takes auto, binary or json, got {encoding!r}")
    tgt = open_target(target, engine=engine, concurrency=concurrency,
                      binary=None if encoding == "auto" else encoding == "binary", **settings)
    try:
        samples = load_samples(kit=kit, data=data, spec=tgt.spec, kit_size=kit_size)
        with _progress(quiet) as say:
            result = run_loadgen(tgt, samples, load, folder, series=name, progress=say)
    finally:
        tgt.close()
    _print_run(result)
    _write_json(json_path, result)


def _serving_settings(target: str, threads: int | None, instances: int | None,
                      max_batch_size: int | None, delay_us: int) -> dict[str, Any]:
    """Explicit options win; else a repository model's config.pbtxt (e.g. a sweep's)."""
    if target.startswith(("http", "grpc://")):
        return {}
    from rtinfer.bench.sweep import read_config
    from rtinfer.deploy.settings import ModelConfig

    cfg = read_config(target) if Path(target).is_dir() else None
    if cfg is None or any(v is not None for v in (threads, instances, max_batch_size)):
        batch = max_batch_size or 0
        cfg = ModelConfig(Path(target).name or "model", threads=threads or None,
                          instances=instances or 1, max_batch_size=batch,
                          dynamic_batching=batch > 1, max_queue_delay_us=delay_us)
    return {"threads": cfg.threads, "instances": cfg.instances,
            "batching": cfg.batching() if cfg.dynamic_batching and cfg.max_batch_size > 1
            else None}


def _sweep(target: str, samples: Any, slo: float, folder: Path, duration: float,
           engine: str | None, grids: list[list[int]], delays: list[int], write: bool,
           json_path: Path | None, quiet: bool, samples_args: str) -> None:
    from rtinfer.bench.sweep import candidates, sweep, write_config

    threads, instances, batches = grids
    configs = candidates(threads, instances, batches, delays)
    with _progress(quiet) as say:
        result = sweep(target, samples, slo_p99_ms=slo, out_dir=folder, configs=configs,
                       duration_s=min(duration, 5.0), engine=engine, progress=say)
    table = Table(title=f"sweep: highest QPS with p99 ≤ {slo:g} ms")
    for col in ("config", "capacity samples/s", "QPS within objective", "p99 ms"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(r["name"], f"{r['capacity_samples_per_s']:.1f}",
                      f"{r['qps']:g}" if r["qps"] else "none",
                      f"{r['p99_ms']:.2f}" if r["p99_ms"] else "")
    console.print(table)
    best = result["best"]
    if best is None:
        console.print("no configuration met the objective at any tried load", style="red")
    else:
        console.print(f"best: {best['name']} at {best['qps']:g} QPS (p99 "
                      f"{best['p99_ms']:.2f} ms)", highlight=False)
        if write:
            path = write_config(target, best["config"])
            result["wrote_config"] = str(path)
            console.print(f"wrote {path}; re-run: rtinfer bench {target} --scenario server "
                          f"--qps {best['qps']:g} --slo-p99-ms {slo:g} {samples_args}",
                          highlight=False)
    _write_json(json_path, result)


def _print_run(r: dict[str, Any]) -> None:
    lat = r.get("latency_ms") or {}
    table = Table(title=f"{r['label']}: {r['validity']}")
    for col in ("samples/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "n", "objective ms",
                "client CPU %", "target CPU %"):
        table.add_column(col, justify="right")
    res = r["resources"]
    table.add_row(f"{r['throughput']['samples_per_s']:.1f}",
                  *(f"{lat[k]:.2f}" if k in lat else "" for k in ("p50", "p90", "p99",
                                                                   "p99_9")),
                  str(lat.get("n", 0)), f"{r['objective']['p99_ms'] or ''}",
                  f"{res['client']['cpu_percent']:.0f}", f"{res['target']['cpu_percent']:.0f}")
    console.print(table)
    if sched := r.get("schedule"):
        console.print(f"offered {sched['offered_qps']:,.0f} QPS for {sched['duration_s']:g} s: "
                      f"{sched['scheduled']:,} scheduled, {sched['issued']:,} issued, "
                      f"{sched['not_issued']:,} not issued, {sched['late']:,} late; achieved "
                      f"{sched['achieved_qps']:,.1f} QPS", highlight=False)
    for reason in r["invalid_reasons"]:
        console.print(f"INVALID: {reason}", style="red", highlight=False)
    for w in r["warnings"]:
        console.print(f"warning: {w}", style="yellow", highlight=False)
    console.print(f"latency from scheduled issue time; {lat.get('estimator', '')}; logs in "
                  f"{r['logs']['dir']}", highlight=False)


@app.command()
def report(
    results: list[Path] = typer.Argument(..., help="Result JSON files (from --json)."),
    html: Path = typer.Option(..., "--html", help="Write a self-contained HTML report here."),
    title: str = typer.Option("rtinfer report", help="Page title."),
) -> None:
    """An HTML report comparing result files; the kind of result picks the report."""
    loaded = [json.loads(p.read_text()) for p in results]
    kinds = {r.get("kind") for r in loaded}
    reporters = {REPORTERS.get(str(k)) for k in kinds}
    if None in reporters or len(reporters) != 1:
        raise typer.BadParameter(f"cannot report results of kind {sorted(map(str, kinds))} "
                                 f"together; reports exist for {sorted(REPORTERS)}")
    page = next(iter(reporters))(loaded, title)  # type: ignore[misc]
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(page)
    console.print(f"wrote {html}", highlight=False)
