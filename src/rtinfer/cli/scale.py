"""``rtinfer predict`` (offline batch inference, in-process or on Ray Data) and ``rtinfer
deploy kuberay`` (a RayService manifest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from rtinfer.cli._app import app, console, err_console


@app.command()
def predict(
    paths: list[str] = typer.Argument(..., metavar="MODEL INPUT OUTPUT",
                                      help="The model (artifact or model version folder, "
                                      "ONNX file), the rows (.npz, .csv, .parquet) and where "
                                      "to write the outputs (.npz, .csv, .parquet). With "
                                      "--kit: [MODEL] OUTPUT."),
    kit: str | None = typer.Option(None, "--kit", help="Predict a kit's split (its float "
                                   "model unless MODEL is given)."),
    split: str = typer.Option("test", "--split", help="With --kit: which split."),
    id_column: str | None = typer.Option(None, "--id-column", help="The rows' id column "
                                         "[default: 'id' when there is one, else the row "
                                         "number]."),
    engine: str | None = typer.Option(None, "--engine", "-e"),
    threads: int | None = typer.Option(None, "--threads", "-t", min=1, help="Intra-op "
                                       "threads (per actor with --ray, default 1)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    on_ray: bool = typer.Option(False, "--ray", help="Run on Ray Data: an actor pool, one "
                                "model load per actor (rtinfer[ray])."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="With --ray: actors."),
    address: str | None = typer.Option(None, "--address", help="With --ray: the cluster "
                                       "(auto, host:6379, ray://host:10001); default: a "
                                       "local instance."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Run a model over a file of rows (or a kit's split) and write its outputs beside the
    rows' ids; in-process, or on Ray Data with --ray. Reports rows per second."""
    from rtinfer.models import import_model
    from rtinfer.scale.batch import predict as run_predict
    from rtinfer.scale.batch import read_inputs, write_predictions

    if not on_ray and (address is not None or concurrency != 1):
        raise typer.BadParameter("--address and --concurrency go with --ray")
    if kit is not None:
        if len(paths) not in (1, 2):
            raise typer.BadParameter("with --kit give [MODEL] OUTPUT")
        from rtinfer import kits

        loaded = kits.load(kit, build=True)
        model = paths[0] if len(paths) == 2 else str(loaded.model_path)
        inputs = loaded.split(split).inputs
        rows = (np.arange(len(next(iter(inputs.values())))), inputs)
        output = Path(paths[-1])
    else:
        if len(paths) != 3:
            raise typer.BadParameter("give MODEL INPUT OUTPUT (or --kit NAME [MODEL] OUTPUT)")
        model, output = paths[0], Path(paths[2])
        rows = read_inputs(paths[1], import_model(model).spec, id_column)

    def report(done: int, total: int) -> None:
        if not quiet and err_console.is_terminal:
            err_console.print(f"\r{done:,}/{total:,} rows", end="", highlight=False)

    result = run_predict(model, rows, engine=engine, threads=threads, batch_size=batch_size,
                         on_ray=on_ray, concurrency=concurrency, address=address,
                         progress=report)
    if not quiet and err_console.is_terminal:
        err_console.print()
    written = write_predictions(output, result)
    console.print(f"{len(result.ids):,} rows in {result.seconds:.2f} s "
                  f"({result.rows_per_s:,.0f} rows/s, {result.where}) -> {written}",
                  highlight=False)


deploy_app = typer.Typer(help="Manifests that run a model repository on a cluster.",
                         no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("kuberay")
def deploy_kuberay(
    repo: Path = typer.Argument(..., help="The model repository (read here for the replicas' "
                                "CPUs; the pods mount their own copy)."),
    image: str = typer.Option(..., "--image", help="Container image with rtinfer[ray] and "
                              "the engines installed."),
    claim: str = typer.Option(..., "--claim", help="PersistentVolumeClaim holding the "
                              "repository, mounted read-only at /models in every pod (so "
                              "ReadOnlyMany or ReadWriteMany)."),
    subpath: str = typer.Option("", "--subpath", help="The repository's folder inside the "
                                "volume."),
    replicas: int = typer.Option(1, "--replicas", min=1),
    autoscale: str | None = typer.Option(None, "--autoscale", help="MIN:MAX replicas."),
    target_ongoing: float = typer.Option(2.0, "--target-ongoing", min=0.1),
    threads: int = typer.Option(1, "--threads", "-t", min=1, help="Intra-op threads per "
                                "instance (a replica reserves threads x instances CPUs)."),
    replicas_per_pod: int = typer.Option(1, "--replicas-per-pod", min=1),
    memory_gib: float = typer.Option(2.0, "--memory-gib", min=0.25, help="Memory per "
                                     "replica."),
    api_key_secret: str | None = typer.Option(None, "--api-key-secret", help="Secret whose "
                                              "'api-key' the replicas require."),
    poll_s: float = typer.Option(10.0, "--poll-s", help="Replicas poll the repository for "
                                 "new versions every N seconds (0: never)."),
    name: str = typer.Option("rtinfer", "--name"),
    ray_ingress: str = typer.Option("proxy", "--ray-ingress", help="proxy (Ray's default) or "
                                    "haproxy (Ray's throughput-optimized mode)."),
    out: Path = typer.Option(Path("rayservice.yaml"), "--out"),
) -> None:
    """A KubeRay RayService manifest serving REPO with rtinfer on Ray Serve."""
    from rtinfer.cli.serve import _autoscale
    from rtinfer.scale.kuberay import KubeRaySpec, rayservice
    from rtinfer.scale.ray_serve import replica_cpus

    if not repo.is_dir():
        raise typer.BadParameter(f"{repo} is not a model repository folder")
    spec = KubeRaySpec(image=image, repo_claim=claim, repo_subpath=subpath, name=name,
                       replicas=replicas, autoscale=_autoscale(autoscale),
                       target_ongoing=target_ongoing, threads=threads,
                       replicas_per_pod=replicas_per_pod, memory_per_replica_gib=memory_gib,
                       api_key_secret=api_key_secret, poll_s=poll_s, ingress=ray_ingress)
    cpus = replica_cpus({"repo": str(repo), "overrides": {"threads": threads}})
    text = rayservice(spec, cpus)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {out}: RayService '{name}', replicas of {cpus} CPU(s); apply with "
                  f"kubectl apply -f {out}", highlight=False)
