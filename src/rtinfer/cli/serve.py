"""``rtinfer serve``."""

from __future__ import annotations

from pathlib import Path

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
    api_key: str | None = typer.Option(None, "--api-key", envvar="RTINFER_API_KEY",
                                       help="Require this key on every route but health."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file"),
    max_body_mb: float = typer.Option(64.0, help="Largest accepted request body."),
    engine: str | None = typer.Option(None, "--engine", "-e"),
    threads: int | None = typer.Option(None, "--threads", "-t",
                                       help="Intra-op threads per instance (default: cores "
                                            "shared by the instances)."),
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
    poll_s: float = typer.Option(0.0, "--poll-s", help="Poll the repository for new "
                                 "versions every N seconds (0: only on explicit load)."),
    drain_s: float = typer.Option(30.0, "--drain-s", help="On SIGTERM, let in-flight "
                                  "requests finish for up to N seconds."),
) -> None:
    """Serve a model repository: KServe v2 (Triton's clients) and TF Serving REST over HTTP."""
    import uvicorn

    from rtinfer.serve import create_app, load_repository

    key = api_key_file.read_text().strip() if api_key_file else api_key
    overrides = {
        "instances": instances, "max_batch_size": max_batch_size,
        "preferred_batch_size": _ints(preferred_batch_size, "--preferred-batch-size"),
        "max_queue_delay_us": max_queue_delay_us, "max_queue_size": max_queue_size,
        "default_timeout_us": (int(request_timeout_ms * 1000)
                               if request_timeout_ms is not None else None),
        "length_buckets": _ints(length_buckets, "--length-buckets"),
        "version_policy": version_policy,
    }
    repository = load_repository(repo, engine=engine, threads=threads, overrides=overrides,
                                 drain_timeout_s=drain_s)
    app_ = create_app(repository, api_key=key, max_body_bytes=int(max_body_mb * (1 << 20)),
                      poll_interval_s=poll_s)
    for entry in repository.index():
        version = entry.get("version", "-")
        why = f": {entry['reason']}" if entry["reason"] else ""
        err_console.print(f"{entry['name']} v{version} {entry['state']}{why}", highlight=False)
    err_console.print(f"serving on http://{host}:{port}", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(drain_s) or None)
