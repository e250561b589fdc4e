"""``rtinfer quantize``."""

from __future__ import annotations

from pathlib import Path

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
    _write_json,
    app,
    console,
    print_beyond,
    print_checks,
    task_or_kit,
)


@app.command()
def quantize(
    model: str | None = ModelArg,
    kit: str | None = KitOpt,
    data: Path | None = DataOpt,
    method: str = typer.Option("static", help="static or dynamic (ONNX Runtime: MatMulInteger; "
                               "OpenVINO: int8 weights, activations quantized per group at "
                               "run time; LiteRT: TFLite's dynamic range), float16 "
                               "(LiteRT) or bf16 (OpenVINO's bfloat16 inference on AMX / "
                               "AVX-512 BF16). LiteRT's static is TFLite's full integer."),
    engine: str | None = typer.Option(None, help="Whose quantizer: onnxruntime, openvino "
                                      "(NNCF) or litert (TFLite's converter, for Keras and "
                                      "SavedModel models); the result also runs on that "
                                      "engine. Not "
                                      "given: ONNX Runtime first; when static int8 misses "
                                      "the budget, OpenVINO's int8 weights with run-time "
                                      "activation quantization are tried too."),
    preset: str = typer.Option("default", help="default or transformer (NNCF's preset)."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction",
                                         help="NNCF (--engine openvino): correct each "
                                         "layer's bias for the int8 error."),
    calibration: str = typer.Option("minmax", help="minmax, entropy or percentile."),
    calib_samples: int = typer.Option(128, help="Calibration samples."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor"),
    compute_inputs_only: bool = typer.Option(
        False, "--compute-inputs-only", help="Round activations only where an int8 "
        "Conv/MatMul/Gemm reads them (as NNCF does); other ops keep float. On MiniLM this "
        "lifts the worst embedding cosine from 0.90 to 0.986 and is faster on OpenVINO."),
    max_drop: str | None = MaxDropOpt,
    min_agreement: float | None = MinAgreementOpt,
    extra_eval: Path | None = ExtraEvalOpt,
    calibration_extra: Path | None = typer.Option(
        None, "--calibration-extra", help="More calibration inputs: an .npz named after the "
        "inputs, or a folder of them (what the server's guard captures with capture=FOLDER)."),
    metric: str | None = MetricOpt,
    threads: int | None = typer.Option(None, "--threads", "-t"),
    qat_steps: int = typer.Option(100, "--qat-steps", help="When int8 misses the budget and "
                                  "the model has a PyTorch module and training data (kits), "
                                  "fine-tune this many steps under simulated int8 before "
                                  "keeping layers in float (MiniLM: ~3-6 s a step on 2 "
                                  "cores); 0 turns QAT off."),
    qat_lr: float = typer.Option(2e-5, "--qat-lr", help="QAT learning rate (Adam)."),
    out: Path | None = typer.Option(None, "--out", help="Model repository to write into."),
    name: str | None = typer.Option(None, help="Model name in the repository."),
    report: bool = typer.Option(False, "--report", help="Show the sensitivity ranking."),
    json_path: Path | None = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Calibrate, quantize to int8 under an accuracy budget, verify, measure, write."""
    from rtinfer.optimize import Quantize
    from rtinfer.optimize.passes.qat import QAT
    from rtinfer.optimize.run import run_quantize

    config = Quantize(method=method, engine=engine or "onnxruntime", preset=preset,
                      calibration=calibration, calib_samples=calib_samples, per_channel=per_channel,
                      compute_inputs_only=compute_inputs_only, bias_correction=bias_correction)
    model, task = task_or_kit(model, kit)
    with _progress(quiet) as say:
        result = run_quantize(model, kit=task, data=data, config=config, max_drop=max_drop,
                              metric=metric, min_agreement=min_agreement,
                              extra_eval=extra_eval, calibration_extra=calibration_extra,
                              threads=threads,
                              qat=QAT(steps=qat_steps, lr=qat_lr) if qat_steps > 0 else None,
                              try_dynamic=engine is None,
                              out=out, name=name,
                              progress=say)
    _write_json(json_path, result)
    table = Table(title=f"{config.describe()} — {result['budget']['text']}")
    for col in ("step", f"{result['budget']['metric']} drop", "within budget"):
        table.add_column(col)
    for step in result["steps"]:
        drop = "failed" if step["drop"] is None else f"{step['drop']:.4f}"
        broke = step.get("excluded_by") or []
        table.add_row(step["what"], drop, "yes" if step["within_budget"] else
                      "no" + (f" ({', '.join(broke)})" if broke else ""))
    console.print(table)
    if result.get("evaluation"):
        print_checks(result["evaluation"]["checks"], "the budget on the validation split")
    if report and result["sensitivity"]:
        sens = Table(title="sensitivity: harm when only this layer is quantized "
                           "(1 - mean cosine on the most-disagreeing samples)")
        for col in ("layer", "harm", "worst cosine", "SQNR dB"):
            sens.add_column(col, justify="right")
        for r in result["sensitivity"][:20]:
            sens.add_row(r["node"], f"{r['harm']:.2e}", f"{r['cosine_min']:.4f}",
                         f"{r['sqnr_db']:.1f}")
        console.print(sens)
    if result["qat"]["config"] is not None:
        console.print(f"QAT: {result['qat']['outcome']}", highlight=False)
    if result["kept_in_float"]:
        console.print(f"kept in float: {', '.join(result['kept_in_float'])}", highlight=False)
    # The report's key is "int8" for every method; say what the model really is.
    kind = Quantize.from_dict(result["config"]).kind
    if "held_out" in result:
        held = result["held_out"]
        for label in ("original", "int8"):
            if label in held:
                shown = kind if label == "int8" else label
                console.print(f"{shown} on held-out data: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in held[label].items()), highlight=False)
        if "budget" in held:
            print_checks(held["budget"]["checks"], "the same limits on held-out data "
                         "(reported, not used to choose)")
        print_beyond(held.get("beyond_split"), kind)
        for output, fid in held["fidelity"].items():
            console.print(f"fidelity of {output}: worst cosine {fid['cosine_min']:.4f}, "
                          f"mean {fid['cosine_mean']:.4f}, SQNR {fid['sqnr_db']:.1f} dB",
                          highlight=False)
        perf = result["performance"]
        console.print(f"latency at batch 1 on {perf['engine']}: float "
                      f"{perf['p50_ms']['original']:.2f} ms, {kind} "
                      f"{perf['p50_ms']['int8']:.2f} ms p50 → {perf['speedup']:.2f}x",
                      highlight=False)
    if "message" in result:
        console.print(f"[bold yellow]{result['message']}[/]", highlight=False)
    if "artifact" in result:
        console.print(f"wrote {result['artifact']}", highlight=False)
    if result["status"] != "ok":
        raise typer.Exit(1)


