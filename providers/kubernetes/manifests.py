"""The objects one service is made of, as plain dicts: a pure function of the spec, the image and our labels.

Everything apply sends (and ``mlops render`` prints) comes from here, so what is reviewed is what is
applied. Bodies are complete (server-side apply owns exactly the fields we send) and carry
``apiVersion``/``kind`` and no ``managedFields``. With ``autoscale`` the Deployment has no
``replicas``: the HorizontalPodAutoscaler owns the count.

Pods carry a ``track`` label (``stable``; a rollout's candidate runs as ``canary``, see ``canary``) and
the runtime listens on a private probe port too (liveness, and ``GET /metrics`` for a rollout's
analysis, read through the API server's pod proxy). With a Gateway API router (the target's
``gateway``) the Service selects the stable track only and an HTTPRoute sends the gateway's
requests to it: during a rollout the route gains the canary's Service with a weight and a mirror.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
PREFIX = "mlops.dev"
CONTAINER = "scoring"
PORT = 5001
PROBE_PORT = 5002
"""The runtime's private port: liveness while init() runs, and GET /metrics (never on the public one)."""
SERVICE_PORT = 80
GPU_RESOURCE = "nvidia.com/gpu"
SENSITIVE = "(sensitive)"
STABLE, CANARY = "stable", "canary"
GATEWAY_GROUP = "gateway.networking.k8s.io"


def label(name: str) -> str:
    return f"{PREFIX}/{name}"


@dataclass(frozen=True)
class Placement:
    """Where pods may run: the FPGA kind's extended resource, node selector and tolerations."""

    resource: str | None = None
    count: int = 1
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, str]] = ()


@dataclass(frozen=True)
class Gateway:
    """The Gateway API Gateway whose HTTPRoute serves the service (the target's ``gateway``)."""

    name: str
    namespace: str


@dataclass(frozen=True)
class Service:
    """What the objects of one service are made from."""

    name: str
    namespace: str
    project: str
    target: str
    spec: Mapping[str, Any]
    image: str
    model_dir: str
    entry_script: str
    fingerprint: str
    sensitive: Sequence[str] = ()
    git_commit: str = ""
    git_dirty: bool = False
    service_type: str = "ClusterIP"
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    pull_secret: Mapping[str, Any] | None = field(default=None, repr=False)   # {.dockerconfigjson: ...}
    placement: Placement = Placement()
    keys_digest: str | None = None       # given where the keys themselves are not (render)
    env_values: Mapping[str, str] | None = field(default=None, repr=False)
    """The real environment variable values (the spec holds salted digests); None: the spec's."""
    gateway: Gateway | None = None
    track: str = STABLE
    """``canary``: the objects of a rollout's candidate (``canary.objects``), beside the stable ones."""

    @property
    def deploy(self) -> Mapping[str, Any]:
        return self.spec["deploy"]


def selector(project: str, service: str) -> dict[str, str]:
    """The Deployment's selector: immutable in Kubernetes, so it never carries anything that changes."""
    return {label("project"): project, label("service"): service}


def owner_selector(project: str, target: str, service: str | None = None) -> str:
    """The label selector of everything one target of a project owns (or of one service there)."""
    parts = [f"{MANAGED_BY}=mlops", f"{label('project')}={project}", f"{label('target')}={target}"]
    if service:
        parts.append(f"{label('service')}={service}")
    return ",".join(parts)


def labels(svc: Service) -> dict[str, str]:
    return {
        MANAGED_BY: "mlops", "app.kubernetes.io/name": svc.name, label("project"): svc.project,
        label("service"): svc.name, label("target"): svc.target, label("fingerprint"): svc.fingerprint[:63],
        label("git-commit"): svc.git_commit[:63], label("git-dirty"): str(svc.git_dirty).lower(),
    }


def pod_labels(svc: Service) -> dict[str, str]:
    """No fingerprint on pods: a change that does not touch the pod (service_type) restarts nothing.
    The track tells a rollout's two versions apart (a Service per track behind a router)."""
    return {MANAGED_BY: "mlops", "app.kubernetes.io/name": svc.name, **selector(svc.project, svc.name),
            label("target"): svc.target, label("track"): svc.track}


def cpu_quantity(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def memory_quantity(gb: float) -> str:
    return f"{round(gb * 1024)}Mi"


def key_secret_name(name: str) -> str:
    return f"{name}-keys"


def pull_secret_name(name: str) -> str:
    return f"{name}-registry"


def _meta(svc: Service, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": svc.namespace, "labels": labels(svc)}


def _probe(path: str, settings: Mapping[str, int], port: str) -> dict[str, Any]:
    """Readiness on the public port (it serves once init() is done); liveness on the probe port,
    which answers from the start, so a slow init() is not mistaken for a dead process."""
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": settings["period_seconds"],
            "initialDelaySeconds": settings["initial_delay_seconds"], "timeoutSeconds": settings["timeout_seconds"],
            "failureThreshold": settings["failure_threshold"], "successThreshold": settings["success_threshold"]}


def resources(deploy: Mapping[str, Any], placement: Placement) -> dict[str, Any]:
    """Requests from cpu/memory_gb; a memory limit; gpu and FPGA devices as extended resources (request = limit)."""
    requests = {"cpu": cpu_quantity(deploy["cpu"]), "memory": memory_quantity(deploy["memory_gb"])}
    limits = {"memory": requests["memory"]}
    extended = {}
    if deploy.get("gpu"):
        extended[GPU_RESOURCE] = str(deploy["gpu"])
    if placement.resource:
        extended[placement.resource] = str(placement.count)
    return {"requests": {**requests, **extended}, "limits": {**limits, **extended}}


def _env(svc: Service) -> list[dict[str, Any]]:
    deploy = svc.deploy
    values = svc.env_values if svc.env_values is not None else (deploy.get("environment_variables") or {})
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(values.items())]
    env += [
        {"name": "SERVICE_NAME", "value": svc.name},
        {"name": "SCORING_TIMEOUT_MS", "value": str(deploy["scoring_timeout_ms"])},
        {"name": "MLOPS_MAX_CONCURRENT_REQUESTS", "value": str(deploy["max_concurrent_requests_per_replica"])},
    ]
    if deploy.get("auth") == "key":
        for var, key in (("MLOPS_PRIMARY_KEY", "primary_key"), ("MLOPS_SECONDARY_KEY", "secondary_key")):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": key_secret_name(svc.name), "key": key}}})
    return env


def deployment(svc: Service) -> dict[str, Any]:
    deploy = svc.deploy
    container = {
        "name": CONTAINER,
        "image": svc.image,
        "args": ["--entry-script", f"/var/azureml-app/{svc.entry_script}", "--model-dir", svc.model_dir,
                 "--host", "0.0.0.0", "--port", str(PORT), "--probe-port", str(PROBE_PORT),
                 "--workers", str(deploy["workers"])],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                  {"name": "probe", "containerPort": PROBE_PORT, "protocol": "TCP"}],
        "env": _env(svc),
        "readinessProbe": _probe("/ready", deploy["readiness_probe"], "http"),
        "livenessProbe": _probe("/", deploy["liveness_probe"], "probe"),
        "resources": resources(deploy, svc.placement),
    }
    pod_spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 30}
    if svc.pull_secret is not None:
        pod_spec["imagePullSecrets"] = [{"name": pull_secret_name(svc.name)}]
    if svc.placement.node_selector:
        pod_spec["nodeSelector"] = dict(svc.placement.node_selector)
    if svc.placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in svc.placement.tolerations]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(svc.project, svc.name)},
        "progressDeadlineSeconds": deploy["progress_deadline_s"],
        "revisionHistoryLimit": 5,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": pod_labels(svc), **_template_annotations(svc)}, "spec": pod_spec},
    }
    if "autoscale" not in deploy:
        spec = {"replicas": deploy["replicas"], **spec}
    meta = _meta(svc, svc.name)
    meta["annotations"] = {label("spec"): json.dumps(dict(svc.spec), sort_keys=True, separators=(",", ":")),
                           label("sensitive"): json.dumps(sorted(svc.sensitive))}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def keys_digest(keys: Mapping[str, str]) -> str:
    """A one-way digest of the keys: pods read them at start, so new keys must roll the pods."""
    return hashlib.sha256(f"{keys.get('primary', '')}\0{keys.get('secondary', '')}".encode()).hexdigest()[:16]


def _template_annotations(svc: Service) -> dict[str, Any]:
    if svc.deploy.get("auth") != "key":
        return {}
    return {"annotations": {label("keys-digest"): svc.keys_digest or keys_digest(svc.keys)}}


def service(svc: Service) -> dict[str, Any]:
    """Without a router the Service selects both tracks (a rollout's share is its replica ratio);
    behind a router it selects the stable track only and the HTTPRoute weighs the two."""
    chosen = selector(svc.project, svc.name)
    if svc.gateway is not None:
        chosen[label("track")] = STABLE
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(svc, svc.name),
            "spec": {"type": svc.service_type, "selector": chosen,
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]}}


def http_route(svc: Service, *, canary_weight: int = 0, mirror_percent: int = 0) -> dict[str, Any]:
    """The gateway's route to the service: requests under ``/<service>`` (the prefix removed) go to
    the stable Service, and during a rollout ``canary_weight`` of 100 to the canary's, and
    ``mirror_percent`` are copied to it (answers thrown away by the gateway)."""
    assert svc.gateway is not None
    backends: list[dict[str, Any]] = [{"name": svc.name, "port": SERVICE_PORT, "weight": 100 - canary_weight}]
    if canary_weight:
        backends.append({"name": canary_name(svc.name), "port": SERVICE_PORT, "weight": canary_weight})
    filters: list[dict[str, Any]] = [
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    if mirror_percent:
        filters.append({"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": canary_name(svc.name), "port": SERVICE_PORT}, "percent": mirror_percent}})
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": f"/{svc.name}"}}], "filters": filters,
            "backendRefs": backends}
    parent = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": svc.gateway.name,
              "namespace": svc.gateway.namespace}
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute", "metadata": _meta(svc, svc.name),
            "spec": {"parentRefs": [parent], "rules": [rule]}}


def canary_name(name: str) -> str:
    """The candidate's Deployment (and, behind a router, its Service) during a rollout."""
    return f"{name}-{CANARY}"


def key_secret(svc: Service) -> dict[str, Any]:
    data = {"primary_key": _b64(svc.keys.get("primary", "")), "secondary_key": _b64(svc.keys.get("secondary", ""))}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(svc, key_secret_name(svc.name)),
            "type": "Opaque", "data": data}


def pull_secret(svc: Service) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(svc, pull_secret_name(svc.name)),
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": _b64(json.dumps(svc.pull_secret, sort_keys=True))}}


def dockerconfig(registry: str, username: str, password: str) -> dict[str, Any]:
    """The ``.dockerconfigjson`` a kubelet reads to pull from ``registry``."""
    auth = _b64(f"{username}:{password}")
    return {"auths": {registry.split("/")[0]: {"username": username, "password": password, "auth": auth}}}


def autoscaler(svc: Service) -> dict[str, Any]:
    auto = svc.deploy["autoscale"]
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(svc, svc.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc.name},
            "minReplicas": auto["min_replicas"], "maxReplicas": auto["max_replicas"],
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": auto["target_utilization"]}}}],
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": auto["refresh_seconds"]}]}},
        },
    }


def objects(svc: Service) -> list[dict[str, Any]]:
    """Every object of the service, in the order they are applied (what pods need comes first)."""
    out = []
    if svc.deploy.get("auth") == "key":
        out.append(key_secret(svc))
    if svc.pull_secret is not None:
        out.append(pull_secret(svc))
    out += [deployment(svc), service(svc)]
    if "autoscale" in svc.deploy:
        out.append(autoscaler(svc))
    if svc.gateway is not None:
        out.append(http_route(svc))
    return out


def namespace(name: str, project: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {MANAGED_BY: "mlops", label("project"): project}}}


def redacted(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy fit to print: a Secret's values become ``(sensitive)``."""
    out = json.loads(json.dumps(obj))
    if out.get("kind") == "Secret":
        out["data"] = {k: SENSITIVE for k in out.get("data") or {}}
    return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
