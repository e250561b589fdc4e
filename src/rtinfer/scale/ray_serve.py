"""rtinfer's server on Ray Serve (``rtinfer serve REPO --ray``).

    app = application({"repo": "/models", ...}, replicas=2)   # a Ray Serve Application
    serve.run(app, name="rtinfer", route_prefix="/")

Each replica of the one ``rtinfer`` deployment runs rtinfer's own server (the ASGI app of
:func:`rtinfer.serve.app.build_server`: decode, validate, dynamic batching, engine, encode,
the API key and the body limit) over the whole repository, behind Ray Serve's proxy. The app
is built inside the replica (``__serve_build_asgi_app__``), so no session, lock or thread pool
is pickled, and Ray runs its lifespan: the repository poll, the drain on shutdown.

What the replicas share goes through one small Ray actor per deployment of the application
(``rtinfer-shared-<app>-<token>``: no CPU reserved, on the head node, restarted by Ray with a
new epoch if it dies), the cluster's counterpart of ``--workers``' shared folder:

- model control: ``POST /v2/repository/models/{m}/load|unload`` and a guard's reset land on one
  replica, which records them there and applies them; every replica applies the records it
  has not applied yet every 0.5 s (:class:`~rtinfer.serve.workers.WorkerControl`);
- metrics: each replica pushes its exposition every 0.5 s; a scrape of ``/metrics`` merges the
  replicas' (:func:`~rtinfer.serve.metrics.merge_expositions`).

New versions on disk reach every replica through its own poll (``--poll-s``): the repository
folder must be the same on every node (one host, or a shared volume). Each replica reserves
``num_cpus`` equal to its engine threads (threads per instance x instances of the model that
needs the most), and loads its models with that many cores, so Ray places exactly what the
engines will use.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtinfer.errors import ModelUnavailableError, RtinferError
from rtinfer.serve.workers import empty_state, next_state

__all__ = ["APP", "NAMESPACE", "RayShared", "application", "build", "replica_cpus"]

_LOG = logging.getLogger("rtinfer.serve")

APP = "rtinfer"          # the Serve application (and deployment) name
NAMESPACE = "rtinfer"    # where the shared actor is named
LIVE_S = 10.0            # a replica that has not pushed metrics for this long is gone
KEEP_REPLICAS = 256      # replicas whose last figures the shared actor keeps
SHARED_TIMEOUT_S = 5.0   # a call to the shared actor that takes longer is a fault


class _Shared:
    """The actor's state: control records (``WorkerControl``'s layout) and the replicas'
    latest expositions. Methods are called one at a time (a plain Ray actor)."""

    def __init__(self) -> None:
        import uuid

        # A restarted actor starts empty: a new epoch tells the replicas to forget the
        # record numbers they applied (they would wait for numbers the new one never reaches).
        self.state = {**empty_state(), "epoch": uuid.uuid4().hex}
        self.texts: dict[str, tuple[str, float]] = {}
        self.retired = ""  # the counters of replicas dropped from ``texts``, summed

    def record(self, section: str, name: str, action: str | None) -> tuple[int, str]:
        self.state = next_state(self.state, section, name, action)
        return int(self.state["seq"]), str(self.state["epoch"])

    def read(self) -> dict[str, Any]:
        return self.state

    def push(self, replica: str, text: str) -> None:
        self.texts[replica] = (text, time.monotonic())
        if len(self.texts) > KEEP_REPLICAS:  # autoscaling churn: the longest gone go first,
            from rtinfer.serve.metrics import merge_expositions  # their counters kept

            oldest = min(self.texts, key=lambda r: self.texts[r][1])
            gone = self.texts.pop(oldest)[0]
            self.retired = merge_expositions([(self.retired, False), (gone, False)]).decode()

    def pull(self) -> list[tuple[str, bool]]:
        now = time.monotonic()
        texts = [(text, now - at < LIVE_S) for text, at in self.texts.values()]
        return [*texts, (self.retired, False)] if self.retired else texts


class RayShared:
    """A :class:`~rtinfer.serve.workers.ControlStore` and
    :class:`~rtinfer.serve.metrics.MetricsHub` over the application's shared actor (created by
    the first replica that asks, kept across replica restarts)."""

    def __init__(self, actor_name: str) -> None:
        import ray

        # On the head node (it lives as long as the cluster), restarted if it dies.
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3,
                           resources={"node:__internal_head__": 0.001})(_Shared)
        self.actor: Any = actor.options(name=actor_name, namespace=NAMESPACE,
                                        get_if_exists=True, lifetime="detached").remote()
        self.started = False  # the first call waits for the actor to be created

    async def _call(self, method: str, *args: Any) -> Any:
        import asyncio

        import ray

        try:
            answer = await asyncio.wait_for(getattr(self.actor, method).remote(*args),
                                            SHARED_TIMEOUT_S if self.started else 120)
            self.started = True
            return answer
        except (TimeoutError, ray.exceptions.RayError) as exc:
            raise ModelUnavailableError(f"the replicas' shared actor did not answer "
                                        f"({type(exc).__name__}); retry") from None

    async def record(self, section: str, name: str, action: str | None
                     ) -> tuple[int, str | None]:
        seq, epoch = await self._call("record", section, name, action)
        return int(seq), str(epoch)

    async def read(self) -> dict[str, Any]:
        state: dict[str, Any] = await self._call("read")
        return state

    async def push(self, replica: str, text: str) -> None:
        await self._call("push", replica, text)

    async def pull(self) -> list[tuple[str, bool]]:
        texts: list[tuple[str, bool]] = await self._call("pull")
        return texts


def replica_cpus(settings: Mapping[str, Any]) -> int:
    """CPUs one replica reserves: threads per instance x instances, for the model of the
    repository that needs the most (a model without a thread count takes
    ``settings["threads"]``, default 1: Ray's own default of one CPU per replica)."""
    from rtinfer.serve.repository import ModelRepository

    default = settings["overrides"].get("threads") or 1
    configs = ModelRepository(Path(settings["repo"]), settings["overrides"]).configs().values()
    return max([(c.threads or default) * c.instances for c in configs], default=default)


def application(settings: Mapping[str, Any], *, replicas: int | None = 1,
                autoscale: tuple[int, int] | None = None, target_ongoing: float = 2.0,
                max_ongoing: int = 256, name: str = APP, token: str | None = None,
                cpus: int | None = None) -> Any:
    """The Ray Serve Application of rtinfer's server over ``settings["repo"]`` (an absolute
    path every node can read): ``replicas`` fixed, or ``autoscale=(min, max)`` replicas with
    ``target_ongoing`` requests per replica (Ray Serve's ``target_ongoing_requests``).
    ``max_ongoing`` requests reach one replica at once (its batcher queues them; Ray's
    default of 5 would starve dynamic batching). ``token`` names the shared actor
    (:func:`shared_actor_name`; default: a new one), ``cpus`` what a replica reserves
    (default: :func:`replica_cpus`)."""
    import uuid

    from rtinfer._deps import require

    serve = require("ray.serve", "Serving on Ray")
    cpus = cpus or replica_cpus(settings)
    replica_settings = {**settings, "cores": cpus, "workers": 1, "grpc_port": None}
    # One shared actor per deployment of the application: a redeploy starts from no records.
    # (A Serve config's builder passes a token of its arguments: re-reading the same config
    # finds the same actor instead of leaving one behind.)
    shared_name = shared_actor_name(name, token or uuid.uuid4().hex[:12])

    class Rtinfer:
        def __init__(self, settings: Mapping[str, Any], shared_name: str) -> None:
            self.settings, self.shared_name = dict(settings), shared_name

        def __serve_build_asgi_app__(self) -> Any:
            from rtinfer.serve.app import build_server

            shared = RayShared(self.shared_name)
            app = build_server(self.settings, control_store=shared, metrics_hub=shared)
            for entry in app.state.repository.index():
                why = f": {entry['reason']}" if entry["reason"] else ""
                _LOG.warning("%s v%s %s%s", entry["name"], entry.get("version", "-"),
                             entry["state"], why)
            return app

    options: dict[str, Any] = {"name": name, "ray_actor_options": {"num_cpus": cpus},
                               "max_ongoing_requests": max_ongoing,
                               # rtinfer logs no access lines (and never a payload)
                               "logging_config": {"enable_access_log": False},
                               "graceful_shutdown_timeout_s": settings["drain_timeout_s"]}
    if autoscale is not None:
        low, high = autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "target_ongoing_requests": target_ongoing}
    else:
        options["num_replicas"] = replicas or 1
    deployment = serve.deployment(serve.ingress()(Rtinfer), **options)
    return deployment.bind(replica_settings, shared_name)


def shared_actor_name(app_name: str, token: str) -> str:
    return f"rtinfer-shared-{app_name}-{token}"


def build(args: Mapping[str, Any]) -> Any:
    """Ray Serve's application builder (``import_path: rtinfer.scale.ray_serve:build`` in a
    Serve config or a KubeRay ``serveConfigV2``); ``args``: ``repo`` (required), ``api_key``
    or ``api_key_env``, ``replicas``, ``min_replicas``/``max_replicas``, ``target_ongoing``,
    ``threads``, ``poll_s``, ``max_body_mb``, ``max_batch_size``, ``max_queue_delay_us``,
    ``drain_s``."""
    import hashlib
    import json
    import os

    known = {"repo", "api_key", "api_key_env", "replicas", "min_replicas", "max_replicas",
             "target_ongoing", "threads", "poll_s", "max_body_mb", "max_batch_size",
             "max_queue_delay_us", "drain_s", "name"}
    if unknown := sorted(set(args) - known):
        raise RtinferError(f"unknown rtinfer Ray Serve argument(s) {unknown}; known: "
                           f"{sorted(known)}")
    if "repo" not in args:
        raise RtinferError("the rtinfer Ray Serve builder needs args.repo: the model "
                           "repository's path on every node (a mounted volume)")
    key = args.get("api_key")
    if key is None and args.get("api_key_env"):
        key = os.environ.get(str(args["api_key_env"]))
        if not key:
            raise RtinferError(f"args.api_key_env names {args['api_key_env']}, which is not "
                               "set in the replicas' environment (a Kubernetes secret)")
    overrides = {"threads": _int(args.get("threads")),
                 "max_batch_size": _int(args.get("max_batch_size")),
                 "max_queue_delay_us": _int(args.get("max_queue_delay_us"))}
    settings = {"repo": os.path.realpath(str(args["repo"])), "overrides": overrides,
                "drain_timeout_s": float(args.get("drain_s", 30.0)), "workers": 1,
                "api_key": _checked_key(key),
                "max_body_bytes": int(float(args.get("max_body_mb", 64.0)) * (1 << 20)),
                "poll_interval_s": float(args.get("poll_s", 0.0))}
    autoscale = None
    if "min_replicas" in args or "max_replicas" in args:
        autoscale = (int(args.get("min_replicas", 1)), int(args.get("max_replicas", 1)))
    token = hashlib.sha256(json.dumps(dict(args), sort_keys=True, default=str).encode())
    return application(settings, replicas=_int(args.get("replicas")) or 1, autoscale=autoscale,
                       target_ongoing=float(args.get("target_ongoing", 2.0)),
                       name=str(args.get("name", APP)), token=token.hexdigest()[:12])


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _checked_key(key: str | None) -> str | None:
    from rtinfer.serve.app import check_api_key

    return None if key is None else check_api_key(key)


def connect(address: str | None, *, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at ``address`` (``auto``, ``host:6379`` or ``ray://host:10001``),
    or start a local instance (no dashboard) when None; one clear error when it cannot."""
    from rtinfer._deps import require

    ray = require("ray", "Serving or predicting on Ray")
    if ray.is_initialized():
        return ray
    try:
        if address is not None and address != "auto":
            _reachable(address)  # Ray itself retries an unreachable head for minutes
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        raise RtinferError(f"cannot reach {where}: {str(exc).strip().splitlines()[0]}; start "
                           "one with `ray start --head`, check the address (`auto`, "
                           "host:6379 or ray://host:10001), or leave --address out to start "
                           "a local instance") from None
    return ray


def _reachable(address: str) -> None:
    """A TCP connection to ``host:port`` (or ``ray://host:port``) within 5 s, or
    ConnectionError."""
    import socket

    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except ValueError:
        raise ValueError(f"{address!r} is not host:port") from None
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {where} ({exc.strerror or exc})") from None


def run(settings: Mapping[str, Any], *, address: str | None, host: str, port: int,
        replicas: int | None = 1, autoscale: tuple[int, int] | None = None,
        target_ongoing: float = 2.0, name: str = APP, ingress: str = "proxy") -> None:
    """``rtinfer serve --ray``: deploy the application, wait for SIGTERM/SIGINT, remove it.

    Ray Serve's proxy listens on ``host:port`` (one per node). ``ingress="haproxy"`` starts a
    local instance with Ray's throughput-optimized settings and HAProxy in front of the
    replicas (on a running cluster, those are the cluster's own settings). On a cluster
    where Serve already runs, its HTTP options are kept."""
    import os
    import signal
    import uuid

    if ingress not in INGRESS:
        raise RtinferError(f"unknown Ray ingress {ingress!r}; choose one of {list(INGRESS)}")
    if address is None:  # read by the local instance's processes as they start
        os.environ.update(INGRESS[ingress])
    ray = connect(address)
    from ray import serve

    cpus, token = replica_cpus(settings), uuid.uuid4().hex[:12]
    least = autoscale[0] if autoscale is not None else (replicas or 1)
    total = ray.cluster_resources().get("CPU", 0)
    # (a cluster's autoscaler may add nodes: only a local instance is known to be short)
    if address is None and least and cpus * least > total:
        raise RtinferError(f"{least} replica(s) of {cpus} CPU(s) need {cpus * least} CPUs; "
                           f"the Ray cluster has {total:g}: give fewer replicas or threads")
    app = application(settings, replicas=replicas, autoscale=autoscale,
                      target_ongoing=target_ongoing, name=name, token=token, cpus=cpus)
    serve.start(http_options={"host": host, "port": port})

    def interrupt(*_: Any) -> None:  # while deploying or serving: stop, and clean up below
        raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.suppress(KeyboardInterrupt):  # the way to stop
            try:
                serve.run(app, name=name, route_prefix="/", blocking=False)
            except RuntimeError as exc:  # a replica failed to start: Serve's message says why
                raise RtinferError(f"the application failed to deploy on Ray: "
                                   f"{str(exc).strip()[-1500:]}") from None
            while True:  # until SIGTERM/SIGINT (another signal's handler may wake pause)
                signal.pause()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        with contextlib.suppress(Exception):  # nothing deployed: nothing to delete
            serve.delete(name)  # replicas drain (graceful_shutdown_timeout_s) and stop
        with contextlib.suppress(ValueError):  # never created: no replica started
            ray.kill(ray.get_actor(shared_actor_name(name, token), namespace=NAMESPACE))
        if address is None:
            serve.shutdown()
            ray.shutdown()


#: Ray Serve's request paths, as the environment variables a cluster reads when it starts.
INGRESS = {
    "proxy": {},  # Ray's default: its Python proxy on every node
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
