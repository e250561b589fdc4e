"""A KubeRay ``RayService`` manifest for a model repository (``rtinfer deploy kuberay``).

    text = rayservice(KubeRaySpec(image="registry/rtinfer:0.1", repo_claim="models"), cpus=1)

The manifest runs rtinfer's server on Ray Serve (:mod:`rtinfer.scale.ray_serve`) in a RayCluster
that KubeRay creates: ``serveConfigV2`` names rtinfer's application builder
(``rtinfer.scale.ray_serve:build``) with the repository's path inside the pods; the head
takes no replicas (``num-cpus: "0"``: it runs Ray's control plane and the proxy), and each
worker pod reserves the CPUs of the replicas it holds (a replica's CPUs are its engine
threads). The repository is a volume mounted read-only at the same path in every pod (a
PersistentVolumeClaim); the API key, when there is one, comes from a Kubernetes Secret as
``RTINFER_API_KEY``. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rtinfer.errors import RtinferError

__all__ = ["KubeRaySpec", "rayservice"]

MOUNT = "/models"


@dataclass(frozen=True)
class KubeRaySpec:
    image: str                       # an image with rtinfer[ray] and the engines installed
    repo_claim: str                  # the PersistentVolumeClaim holding the repository
    repo_subpath: str = ""           # the repository's folder inside that volume
    name: str = "rtinfer"
    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    target_ongoing: float = 2.0
    threads: int = 1
    replicas_per_pod: int = 1
    memory_per_replica_gib: float = 2.0
    api_key_secret: str | None = None  # Secret name; its key "api-key"
    poll_s: float = 10.0
    ray_version: str | None = None     # default: the Ray installed here
    ingress: str = "proxy"             # or "haproxy" (rtinfer.scale.ray_serve.INGRESS)


def rayservice(spec: KubeRaySpec, cpus: int) -> str:
    """The manifest's YAML; ``cpus``: what one replica reserves (see
    :func:`rtinfer.scale.ray_serve.replica_cpus`)."""
    import yaml

    _check(spec)
    args: dict[str, Any] = {"repo": f"{MOUNT}/{spec.repo_subpath}".rstrip("/"),
                            "threads": spec.threads, "poll_s": spec.poll_s}
    most = spec.replicas
    if spec.autoscale is not None:
        args["min_replicas"], args["max_replicas"] = spec.autoscale
        args["target_ongoing"] = spec.target_ongoing
        most = spec.autoscale[1]
    else:
        args["replicas"] = spec.replicas
    if spec.api_key_secret:
        args["api_key_env"] = "RTINFER_API_KEY"
    serve_config = {"http_options": {"host": "0.0.0.0", "port": 8000},
                    "applications": [{"name": spec.name, "route_prefix": "/",
                                      "import_path": "rtinfer.scale.ray_serve:build",
                                      "args": args}]}
    pods = math.ceil(most / spec.replicas_per_pod)
    least = math.ceil((spec.autoscale[0] if spec.autoscale else spec.replicas)
                      / spec.replicas_per_pod)
    worker_cpu = cpus * spec.replicas_per_pod
    worker_memory = f"{math.ceil(spec.memory_per_replica_gib * spec.replicas_per_pod)}Gi"
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": spec.name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": spec.ray_version or _ray_version(),
                "enableInTreeAutoscaling": spec.autoscale is not None,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {"spec": _pod(spec, "ray-head", "1", "2Gi", head=True)},
                },
                "workerGroupSpecs": [{
                    "groupName": "replicas",
                    "replicas": least, "minReplicas": least, "maxReplicas": pods,
                    "rayStartParams": {"num-cpus": str(worker_cpu)},
                    "template": {"spec": _pod(spec, "ray-worker", str(worker_cpu),
                                              worker_memory, head=False)},
                }],
            },
        },
    }
    return yaml.dump(manifest, Dumper=_dumper(), sort_keys=False)


def _dumper() -> Any:
    import yaml

    dumper: Any = type("Dumper", (yaml.SafeDumper,), {})  # our own, so that add_representer
    #                                                       leaves yaml's SafeDumper alone

    def text(dumper: Any, value: str) -> Any:  # serveConfigV2 as a block, as KubeRay shows it
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    dumper.add_representer(str, text)
    return dumper


def _pod(spec: KubeRaySpec, container: str, cpu: str, memory: str, *, head: bool
         ) -> dict[str, Any]:
    ports = ([{"containerPort": 6379, "name": "gcs-server"},
              {"containerPort": 8265, "name": "dashboard"},
              {"containerPort": 10001, "name": "client"}] if head else [])
    ports.append({"containerPort": 8000, "name": "serve"})
    from rtinfer.scale.ray_serve import INGRESS

    env: list[dict[str, Any]] = [{"name": k, "value": v}
                                 for k, v in INGRESS[spec.ingress].items()]
    if spec.api_key_secret:
        env.append({"name": "RTINFER_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": spec.api_key_secret, "key": "api-key"}}})
    body: dict[str, Any] = {
        "name": container, "image": spec.image,
        "resources": {"requests": {"cpu": cpu, "memory": memory},
                      "limits": {"cpu": cpu, "memory": memory}},
        "ports": ports,
        "volumeMounts": [{"name": "models", "mountPath": MOUNT, "readOnly": True}],
    }
    if env:
        body["env"] = env
    return {"containers": [body],
            "volumes": [{"name": "models",
                         "persistentVolumeClaim": {"claimName": spec.repo_claim,
                                                   "readOnly": True}}]}


def _check(spec: KubeRaySpec) -> None:
    import re

    from rtinfer.scale.ray_serve import INGRESS

    # KubeRay names services <name>-head-svc / <name>-serve-svc: a DNS-1035 label with room
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", spec.name):
        raise RtinferError(f"--name {spec.name!r}: use lower-case letters, digits and '-', "
                           "starting with a letter, at most 40 characters (Kubernetes derives "
                           "service names from it)")
    if spec.ingress not in INGRESS:
        raise RtinferError(f"--ray-ingress {spec.ingress!r}: choose one of {list(INGRESS)}")
    if not spec.image.strip():
        raise RtinferError("give --image: a container image with rtinfer[ray] installed")
    if not spec.repo_claim.strip():
        raise RtinferError("give --claim: the PersistentVolumeClaim that holds the repository")
    if spec.replicas < 1 or spec.threads < 1 or spec.replicas_per_pod < 1:
        raise RtinferError("replicas, threads and replicas per pod must be >= 1")
    if ".." in spec.repo_subpath.split("/") or spec.repo_subpath.startswith("/"):
        raise RtinferError(f"--subpath {spec.repo_subpath!r} must be a relative folder "
                           "inside the volume")


def _ray_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "2.60.0"
