"""Serve fixtures: an ASGI app on a free loopback port in a thread, polled until ready."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from rtinfer.bench.targets import wait_until_ready


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Yield ``host:port`` of ``app`` served by uvicorn on 127.0.0.1, stopped on exit."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"127.0.0.1:{port}"
    wait_until_ready(f"http://{url}", 30, alive=thread.is_alive)
    try:
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
