"""What one request costs inside the app, with no socket: rtinfer's ASGI app vs a plain FastAPI
app, each called directly, in one process, interleaved.

    python benchmarks/serving_asgi.py [--rounds 8] [--requests 4000] [--profile rtinfer]

The tiny MLP (30-64-64-2) of ``serving_wrk.py``, one sample per KServe v2 JSON request, 1 ONNX
Runtime thread, uvloop. Each request is one ``await app(scope, receive, send)``: the routing,
the body read, decoding and checking, the model, metrics and the response, but no HTTP parsing
and no socket, so the figure is each app's own Python per request (uvicorn's share is what
``serving_wrk.py`` measures above it). Per round, p50 over ``--requests`` calls (numpy linear);
the median over rounds is printed. ``--profile NAME`` prints cProfile's top functions for that
app instead (cProfile's own cost inflates small functions: read the shares, not the times).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving_wrk import fastapi_app, mlp


async def drive(app: Any, path: str, body: bytes, n: int) -> np.ndarray:
    """``n`` requests, one after another; each one's seconds."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    took = np.empty(n)
    for i in range(n):
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError

        start = time.perf_counter()
        await app(dict(scope), receive, send)
        took[i] = time.perf_counter() - start
    if set(statuses) != {200}:
        raise RuntimeError(f"statuses {sorted(set(statuses))}")
    return took


async def start(app: Any) -> asyncio.Task[None]:
    """Run the app's lifespan startup; the task must be kept (its end is the shutdown)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   inbox.get, outbox.put))
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {message}")
    return task


def main() -> None:
    import uvloop

    import rtinfer
    from rtinfer.serve import create_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--profile", choices=["rtinfer", "fastapi"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtinfer-asgi-"))
    model = mlp((30, 64, 64, 2), work / "model")
    rtinfer.save_artifact(model, work / "repo", "tiny")
    x = np.random.default_rng(0).standard_normal((1, 30)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 30],
                                   "data": x.ravel().tolist()}]}).encode()
    path = "/v2/models/tiny/infer"
    apps = {"rtinfer": create_app(str(work / "repo"), poll_interval_s=0),
            "fastapi": fastapi_app(str(model.path), "tiny")}

    async def run() -> None:
        lifespans = [await start(app) for app in apps.values()]  # kept: they end the apps
        if args.profile:
            app = apps[args.profile]
            await drive(app, path, body, 2000)
            profile = cProfile.Profile()
            profile.enable()
            await drive(app, path, body, 5 * args.requests)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
            del lifespans
            return
        p50: dict[str, list[float]] = {name: [] for name in apps}
        for r in range(args.rounds):
            for name in list(apps)[r % 2:] + list(apps)[:r % 2]:
                took = await drive(apps[name], path, body, args.requests)
                p50[name].append(float(np.percentile(took, 50, method="linear")) * 1e6)
        for name, values in p50.items():
            print(f"{name:8s} p50 per request {np.median(values):6.1f} us (median of "
                  f"{args.rounds} rounds; range {min(values):.1f}-{max(values):.1f})")
        del lifespans

    uvloop.run(run())


if __name__ == "__main__":
    main()
