"""``rtinfer serve``."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from rtinfer.cli._app import (
    app,
    err_console,
)


def _ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated whole numbers, e.g. 4,8; "
                                 f"got {text!r}") from None


@app.command()
def serve(
    repo: Path = typer.Argument(..., help="Model repository (<repo>/<name>/<version>/)."),
    host: str = typer.Option("127.0.0.1", help="Bind address; loopback unless you say so."),
    port: int = typer.Option(8000),
    grpc_port: int = typer.Option(0, "--grpc-port", min=0, max=65535,
                                  help="Also serve KServe v2 over gRPC on this port (Triton "
                                       "uses 8001); 0: no gRPC."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RTINFER_API_KEY",
                                       help="Require this key on every route but health."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    max_body_mb: float = typer.Option(64.0, help="Largest accepted request body."),
    engine: str | None = typer.Option(None, "--engine", "-e"),
    threads: int | None = typer.Option(None, "--threads", "-t",
                                       help="Intra-op threads per instance (default: cores "
                                            "shared by the instances of all workers)."),
    instances: int | None = typer.Option(None, help="Sessions per model (batches run at "
                                         "once); default: config.pbtxt's instance_group."),
    max_batch_size: int | None = typer.Option(None, help="Dynamic batching: rows per batch "
                                              "(0 or 1: off); default: config.pbtxt."),
    preferred_batch_size: str | None = typer.Option(None, help="e.g. 4,8: run a batch as "
                                                    "soon as it holds one of these."),
    max_queue_delay_us: int | None = typer.Option(None, help="How long the oldest request "
                                                  "may wait for others to join its batch."),
    max_queue_size: int | None = typer.Option(None, help="Queued requests before 503."),
    request_timeout_ms: float | None = typer.Option(None, help="Fail a request (503) that "
                                                    "waited this long in the queue."),
    length_buckets: str | None = typer.Option(None, help="e.g. 16,32,64,128: pad text to "
                                              "the next bucket and batch by bucket."),
    version_policy: str | None = typer.Option(None, help="latest:N, specific:1,3 or all."),
    guard: str | None = typer.Option(
        None, "--guard", help="Online accuracy guard for every model whose versions name a "
        "reference: e.g. sample=0.02,metric=top1_agreement,threshold=0.98,window=500,"
        "action=rollback (also cosine, alert, reference=N, output=NAME, queue=N, "
        "capture=FOLDER); 'off' disables rtinfer.json's."),
    poll_s: float = typer.Option(0.0, "--poll-s", help="Poll the repository for new "
                                 "versions every N seconds (0: only on explicit load)."),
    drain_s: float = typer.Option(30.0, "--drain-s", help="On SIGTERM, let in-flight "
                                  "requests finish for up to N seconds."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes accepting on "
                                "the port, each loading the repository."),
    on_ray: bool = typer.Option(False, "--ray", help="Serve on Ray Serve: each replica runs "
                                "this server over the repository (rtinfer[ray])."),
    address: str | None = typer.Option(None, "--address", help="With --ray: the cluster "
                                       "(auto, host:6379, ray://host:10001); default: start "
                                       "a local Ray instance."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="With --ray: replicas."),
    autoscale: str | None = typer.Option(None, "--autoscale", help="With --ray: MIN:MAX "
                                         "replicas, scaled by Ray Serve."),
    target_ongoing: float = typer.Option(2.0, "--target-ongoing", min=0.1, help="With "
                                         "--autoscale: requests in flight per replica."),
    ray_ingress: str = typer.Option("proxy", "--ray-ingress", help="With --ray and a local "
                                    "instance: proxy (Ray's default Python proxy) or haproxy "
                                    "(Ray's throughput-optimized mode, HAProxy in front)."),
) -> None:
    """Serve a model repository: KServe v2 (Triton's clients) and TF Serving REST over HTTP,
    and KServe v2 over gRPC with --grpc-port."""
    import uvicorn

    from rtinfer.serve import ModelRepository
    from rtinfer.serve.http import UVICORN
    from rtinfer.serve.workers import run_workers

    key = _api_key(api_key, api_key_file)
    scale = _autoscale(autoscale)
    if not on_ray and (address is not None or scale is not None or replicas != 1):
        raise typer.BadParameter("--address, --replicas and --autoscale go with --ray")
    if on_ray and (workers != 1 or grpc_port):
        raise typer.BadParameter("--ray serves HTTP through Ray Serve's proxy: scale with "
                                 "--replicas (not --workers); gRPC is not served on Ray")
    overrides = {
        "engine": engine, "threads": threads, "instances": instances,
        "max_batch_size": max_batch_size,
        "preferred_batch_size": _ints(preferred_batch_size, "--preferred-batch-size"),
        "max_queue_delay_us": max_queue_delay_us, "max_queue_size": max_queue_size,
        "default_timeout_us": (int(request_timeout_ms * 1000)
                               if request_timeout_ms is not None else None),
        "length_buckets": _ints(length_buckets, "--length-buckets"),
        "version_policy": version_policy,
        "guard": guard,
    }
    if guard is not None:
        from rtinfer.deploy.settings import GuardConfig
        from rtinfer.errors import ConfigError

        try:
            GuardConfig.parse(guard)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--guard") from None
    for config in ModelRepository(repo, overrides, workers=workers).configs().values():
        if why := config.oversubscription():
            err_console.print(f"[yellow]warning:[/] {why}", highlight=False)
    if key is None and not _loopback(host):
        err_console.print(f"[yellow]warning:[/] serving on {host} without an API key: anyone "
                          "who can reach this address can run and load models; give "
                          "--api-key-file", highlight=False)
    settings = {"repo": repo, "overrides": overrides, "drain_timeout_s": drain_s,
                "workers": workers, "api_key": key,
                "max_body_bytes": int(max_body_mb * (1 << 20)), "poll_interval_s": poll_s,
                "grpc_port": grpc_port or None, "host": host}
    grpc = f" and grpc://{host}:{grpc_port}" if grpc_port else ""
    if on_ray:
        from rtinfer.errors import RtinferError
        from rtinfer.scale import ray_serve

        how = (f"{scale[0]} to {scale[1]} replicas" if scale else f"{replicas} replica(s)")
        settings = {**settings, "repo": str(repo.resolve())}  # the same path on every replica
        err_console.print(f"serving on http://{host}:{port} on Ray Serve, {how} of "
                          f"{ray_serve.replica_cpus(settings)} CPU(s)", highlight=False)
        try:
            ray_serve.run(settings, address=address, host=host, port=port, replicas=replicas,
                          autoscale=scale, target_ongoing=target_ongoing, ingress=ray_ingress)
        except RtinferError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        return
    if workers == 1:
        app_ = _build_app(settings)
        err_console.print(f"serving on http://{host}:{port}{grpc}", highlight=False)
        with _stop_is_success():
            uvicorn.run(app_, host=host, port=port, **UVICORN,
                        timeout_graceful_shutdown=int(drain_s) or None)
        return
    err_console.print(f"serving on http://{host}:{port}{grpc} with {workers} worker processes",
                      highlight=False)
    code = run_workers(functools.partial(_build_app, settings), workers, host=host, port=port,
                       drain_s=drain_s)
    if code:
        err_console.print("[bold red]error:[/] a worker failed to start (its error is above)",
                          highlight=False)
        raise typer.Exit(code)


def _autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high))
    except ValueError:
        bounds = (0, 0)
    if not sep or not 0 <= bounds[0] <= bounds[1] or bounds[1] < 1:
        raise typer.BadParameter(f"--autoscale takes MIN:MAX replicas with 0 <= MIN <= MAX "
                                 f"and MAX >= 1, e.g. 1:4; got {text!r}")
    return bounds


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _api_key(given: str | None, path: Path | None) -> str | None:
    """The key from ``--api-key``/``RTINFER_API_KEY`` or ``--api-key-file``; an empty or
    unreadable key stops the server before it starts (it would otherwise serve openly)."""
    from rtinfer.serve.app import check_api_key

    if given is not None and path is not None:
        raise typer.BadParameter("give the key once: --api-key (or RTINFER_API_KEY) or "
                                 "--api-key-file, not both")
    if path is not None:
        try:
            given = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read the API key file {path}: {exc}",
                                     param_hint="--api-key-file") from None
    if given is None:
        return None
    try:
        return check_api_key(given)
    except ValueError as exc:
        source = f"the file {path}" if path is not None else "--api-key / RTINFER_API_KEY"
        raise typer.BadParameter(f"{exc} (from {source})") from None


@contextlib.contextmanager
def _stop_is_success() -> Iterator[None]:
    """SIGTERM and SIGINT end a serve that drained as a success (exit 0).

    uvicorn drains on either signal, then raises it again once its own handlers are gone, so
    that the process dies "of" the signal (status 143); an orchestrator records that as a
    crash on every rolling deploy. Handlers that do nothing catch that second delivery.
    """
    signals = (signal.SIGTERM, signal.SIGINT)
    saved = {sig: signal.signal(sig, lambda number, frame: None) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _build_app(settings: dict[str, Any], workers_dir: Path | None = None) -> Any:
    """Load the repository and build the app (in each worker process with ``workers_dir``)."""
    from rtinfer.cli import configure_logging
    from rtinfer.serve.app import build_server

    if workers_dir is not None:  # a fresh spawned process: set up logging as main() does
        configure_logging()
    app_ = build_server(settings, workers_dir=workers_dir)
    repository = app_.state.repository
    who = f"worker {os.getpid()}: " if workers_dir is not None else ""
    for entry in repository.index():
        version = entry.get("version", "-")
        why = f": {entry['reason']}" if entry["reason"] else ""
        err_console.print(f"{who}{entry['name']} v{version} {entry['state']}{why}",
                          highlight=False)
    return app_
