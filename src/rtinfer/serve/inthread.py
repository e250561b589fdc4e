"""A server in a background thread of this process, on a free loopback port, for the demo,
benchmarks and tests: started, polled until ready (never a fixed sleep), stopped on exit.

    with serve_in_thread(create_app("repo")) as base:     # "http://127.0.0.1:PORT"
        urllib.request.urlopen(f"{base}/v2/health/ready")
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["free_port", "serve_in_thread"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, probe: str = "/v2/health/ready",
                    timeout_s: float = 60.0) -> Iterator[str]:
    """Yield the base URL of ``app`` served by uvicorn once ``probe`` answers 200."""
    import uvicorn

    from rtinfer.bench.targets import wait_until_ready

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, timeout_s, alive=thread.is_alive, path=probe)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
