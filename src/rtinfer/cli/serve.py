"""``rtinfer serve``."""

from __future__ import annotations

from pathlib import Path

import typer

from rtinfer.cli._app import (
    app,
    err_console,
)


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


