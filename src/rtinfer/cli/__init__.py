"""The ``rtinfer`` command: parse, call the public API, render with rich. Nothing more.

Every verb that measures writes its result dict with ``--json PATH`` as well as a table.

Each verb lives in its own module and registers itself on the shared Typer ``app``.
"""

from __future__ import annotations

import logging
import os

from rtinfer.cli import bench, models, optimize, prune, quantize, scale, serve  # noqa: F401
from rtinfer.cli._app import app, err_console, print_comparison
from rtinfer.errors import RtinferError

__all__ = ["app", "configure_logging", "main", "print_comparison"]


def configure_logging() -> None:
    """Warnings and errors of rtinfer and its libraries to stderr, one line each."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console entry point: rtinfer's own errors print as one clear line, exit code 2."""
    configure_logging()
    # Third-party progress bars and advisories would interleave with rich's output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # torch.onnx's exporter warns about every optional torchvision op it cannot register;
    # torch's own log settings (read when torch is imported) keep its errors only.
    os.environ.setdefault("TORCH_LOGS", "-onnx")
    try:
        app()
    except (RtinferError, ValueError, TypeError) as exc:
        # One line however narrow the terminal: a path broken mid-name cannot be copied.
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
