"""One service as one *layered* IoT Edge deployment: the module, its registry credentials, its spec.

Why layered (README, "Azure IoT Edge"): a plan changes one service at a time, so each service is
its own deployment; a layer adds exactly its module (dotted ``properties.desired.modules.<m>``
keys merge instead of replacing ``$edgeAgent``), leaves the base deployment's runtime, system
modules and ``$edgeHub`` routes intact, and deleting it removes exactly that module from the
devices (IoT Hub recomputes the merge). Deleting a *base* deployment instead leaves its modules
running on the devices.

Content and id are immutable in IoT Hub, so the id is a hash of the content: a change is a new
deployment. The service's spec travels in the content (``properties.desired.mlops`` of the
module's own twin, a dotted key like the rest of the layer),
so ``read()`` gets back exactly what was planned, from the hub alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from planner.errors import ProviderError
from planner.hashing import canonical_json

DESIRED_LIMIT = 32 * 1024
"""IoT Hub's limit on a twin's desired properties (bytes of JSON)."""
CHUNK = 512
"""createOptions chunk length the IoT Edge tooling uses (the agent joins createOptions, createOptions01, …)."""
MAX_CHUNKS = 100
CONTAINER_PORT = 5001
"""The port the image's scoring runtime listens on inside the container (the image's CMD)."""
SENSITIVE = "(sensitive)"
LABEL_MANAGED = "managed-by"
LABELS = ("mlops-project", "mlops-target", "mlops-service", "mlops-fingerprint", "mlops-git-commit",
          "mlops-git-dirty")
RESTART_POLICIES = {"always": "always", "on-failure": "on-failure", "on-unhealthy": "on-unhealthy", "never": "never"}
_ID_BAD = re.compile(r"[^a-z0-9-]+")


def chunk_create_options(options: Mapping[str, Any]) -> dict[str, str]:
    """``createOptions`` as the agent expects it: stringified JSON in contiguous 512-character chunks."""
    text = json.dumps(options, separators=(",", ":"), sort_keys=True)
    pieces = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or ["{}"]
    if len(pieces) > MAX_CHUNKS:
        raise ProviderError(f"deploy.create_options: {len(text)} characters of createOptions is more than the "
                            f"agent joins ({MAX_CHUNKS} chunks of {CHUNK})")
    return {("createOptions" if i == 0 else f"createOptions{i:02d}"): piece for i, piece in enumerate(pieces)}


def join_create_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse, as the agent does it: createOptions + createOptions01 + … in order."""
    text = str(settings.get("createOptions") or "")
    n = 1
    while f"createOptions{n:02d}" in settings:
        text += str(settings[f"createOptions{n:02d}"])
        n += 1
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def create_options(deploy: Mapping[str, Any]) -> dict[str, Any]:
    """Docker create options: the scoring port published on the device, memory and CPU limits, extras."""
    extra = dict(deploy.get("create_options") or {})
    host = dict(extra.pop("HostConfig", None) or {})
    port_key = f"{CONTAINER_PORT}/tcp"
    host["PortBindings"] = {**dict(host.get("PortBindings") or {}),
                            port_key: [{"HostPort": str(deploy.get("port", CONTAINER_PORT))}]}
    if deploy.get("memory_gb"):
        host["Memory"] = int(float(deploy["memory_gb"]) * (1 << 30))
    if deploy.get("cpu"):
        host["NanoCpus"] = int(float(deploy["cpu"]) * 1e9)
    exposed = {**dict(extra.pop("ExposedPorts", None) or {}), port_key: {}}
    return {**extra, "ExposedPorts": exposed, "HostConfig": host}


def module_env(name: str, deploy: Mapping[str, Any], keys: Mapping[str, str],
               values: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The module's environment; ``values`` are the real variable values (the spec holds digests)."""
    env = {str(k): str(v) for k, v in (values if values is not None
                                       else deploy.get("environment_variables") or {}).items()}
    env["SCORING_TIMEOUT_MS"] = str(deploy.get("scoring_timeout_ms", 60000))
    env["SERVICE_NAME"] = name
    if keys:
        env["MLOPS_PRIMARY_KEY"], env["MLOPS_SECONDARY_KEY"] = keys["primary"], keys["secondary"]
    return {k: {"value": env[k]} for k in sorted(env)}


def credential_name(registry: str) -> str:
    return "mlops_" + re.sub(r"[^A-Za-z0-9]+", "_", registry).strip("_").lower()


def content(*, name: str, spec: Mapping[str, Any], image: str, keys: Mapping[str, str],
            sensitive: list[str], registry: str, credentials: tuple[str, str] | None,
            env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The layered deployment's ``content``: one module, optional registry credentials, our spec."""
    deploy = spec["deploy"]
    module = {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": RESTART_POLICIES[deploy.get("restart_policy", "always")],
        "imagePullPolicy": "on-create",
        "env": module_env(name, deploy, keys, env),
        "settings": {"image": image, **chunk_create_options(create_options(deploy))},
    }
    agent: dict[str, Any] = {f"properties.desired.modules.{name}": module}
    if credentials:
        agent[f"properties.desired.runtime.settings.registryCredentials.{credential_name(registry)}"] = {
            "username": credentials[0], "password": credentials[1], "address": registry}
    return {"modulesContent": {
        "$edgeAgent": agent,
        "$edgeHub": {},   # no routes of ours: the base deployment's routes stay as they are
        name: {"properties.desired.mlops": {"spec": json.loads(canonical_json(dict(spec))),
                                            "sensitive": sorted(sensitive)}},
    }}


def desired_size(body_content: Mapping[str, Any], name: str) -> dict[str, int]:
    """Bytes of JSON each twin's desired properties gain from this layer ($edgeAgent, the module twin)."""
    mc = body_content["modulesContent"]
    return {twin: len(json.dumps(mc[twin], separators=(",", ":")).encode()) for twin in ("$edgeAgent", name)}


def check_size(body_content: Mapping[str, Any], name: str, where: str) -> None:
    """Refuse, at plan time, a layer that alone is past the 32 KB desired-properties limit."""
    for twin, size in desired_size(body_content, name).items():
        if size > DESIRED_LIMIT:
            raise ProviderError(f"{where}: the deployment adds {size} bytes to the {twin} twin's desired properties, "
                                f"over IoT Hub's {DESIRED_LIMIT // 1024} KB limit; make deploy.environment_variables "
                                "or deploy.create_options smaller")


def content_hash(body_content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(body_content)).encode()).hexdigest()


def configuration_id(project: str, name: str, body_content: Mapping[str, Any]) -> str:
    """``mlops-<project>-<service>-<sha12>``: lowercase, at most 128 characters, from the content."""
    base = _ID_BAD.sub("-", f"mlops-{project}-{name}".lower()).strip("-")[:110]
    return f"{base}-{content_hash(body_content)[:12]}"


def labels(*, project: str, target: str, name: str, fingerprint: str, commit: str | None,
           dirty: bool = False) -> dict[str, str]:
    return {LABEL_MANAGED: "mlops", "mlops-project": project, "mlops-target": target, "mlops-service": name,
            "mlops-fingerprint": fingerprint[:64], "mlops-git-commit": commit or "none",
            "mlops-git-dirty": str(bool(dirty)).lower()}


def configuration(*, config_id: str, body_content: Mapping[str, Any], condition: str, priority: int,
                  labels: Mapping[str, str]) -> dict[str, Any]:
    return {"id": config_id, "schemaVersion": "1.0", "labels": dict(labels), "content": dict(body_content),
            "targetCondition": condition, "priority": priority, "metrics": {"queries": {}}}


def stored_spec(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    """The spec a configuration of ours was made from (None: not one of ours, or damaged)."""
    name = (config.get("labels") or {}).get("mlops-service")
    try:
        mlops = config["content"]["modulesContent"][name]["properties.desired.mlops"]
        return dict(mlops["spec"]), list(mlops.get("sensitive") or [])
    except (KeyError, TypeError):
        return None


def module_of(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    agent = ((config.get("content") or {}).get("modulesContent") or {}).get("$edgeAgent") or {}
    return dict(agent.get(f"properties.desired.modules.{name}") or {})


def redacted(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A configuration with its secrets (keys, registry password) replaced, for render and golden files."""
    out = json.loads(json.dumps(body))
    agent = out["content"]["modulesContent"]["$edgeAgent"]
    for key, value in agent.items():
        if key.startswith("properties.desired.runtime.settings.registryCredentials."):
            value["password"] = SENSITIVE
    module = agent.get(f"properties.desired.modules.{name}") or {}
    for var in ("MLOPS_PRIMARY_KEY", "MLOPS_SECONDARY_KEY"):
        if var in module.get("env", {}):
            module["env"][var]["value"] = SENSITIVE
    return out
