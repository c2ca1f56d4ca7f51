"""A deployment config (``computeType`` local / ACI / AKS) -> one stage: a target and the
service's ``deploy`` block.

v1 deployment settings have their own names and some have no equivalent; this maps the ones
that do, keeps only what the chosen target's provider accepts (falling back to a local target
when the stage's provider is not installed or cannot take the file's settings), and returns a
note for everything left out, so nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MlopsError
from ..yamlpos import one_line
from .v1_config import _problem, _shown, read_config

_STAGE_PROVIDER = {"local": "local", "aci": "aci", "aks": "aks"}
_NO_EQUIVALENT = {
    "appInsightsEnabled": "Application Insights has no equivalent; read `mlops logs` instead",
    "sslEnabled": "TLS is terminated in front of the service (a proxy or ingress), not by mlops",
    "sslCertificate": "SSL certificate files are not used; terminate TLS in front of the service",
    "sslKey": "SSL key files are not used; terminate TLS in front of the service",
    "cname": "SSL CNAME has no equivalent",
    "vnetName": "VNet placement has no equivalent",
    "subnetName": "VNet placement has no equivalent",
    "vaultBaseUrl": "customer-managed keys have no equivalent",
    "keyName": "customer-managed keys have no equivalent",
    "keyVersion": "customer-managed keys have no equivalent",
    "dataCollection": "model data collection (collect_model_data) has no equivalent",
    "tokenAuthEnabled": "Azure ML token auth has no equivalent; key auth is used",
    "versionName": "AKS endpoint versions (a retired preview) have no equivalent",
    "trafficPercentile": "AKS endpoint traffic splits (a retired preview) have no equivalent",
}
_DEPLOY_KEYS = {
    "computeType",
    "port",
    "containerResourceRequirements",
    "authEnabled",
    "keys",
    "autoScaler",
    "numReplicas",
    "scoringTimeoutMs",
    "maxConcurrentRequestsPerContainer",
    "maxQueueWaitMs",
    "gpuCores",
    "livenessProbeRequirements",
    "dnsNameLabel",
    "location",
    "namespace",
    "computeTargetName",
    *_NO_EQUIVALENT,
}


DeployFields = Callable[[Mapping[str, Any]], "frozenset[str] | str"]
"""For a target's config, the deploy settings its provider accepts, or why that target cannot be
used as it is (``"is not installed"``, ``"needs subscription_id, ..."``)."""


@dataclass
class _Stage:
    file: str
    compute: str
    target: str
    target_config: dict[str, Any]
    deploy: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    target_notes: list[str] = field(default_factory=list)


def _installed_deploy_fields(config: Mapping[str, Any]) -> frozenset[str] | str:
    """The deploy settings the installed provider of ``config`` accepts, or why it cannot be used
    with what a v1 file says (not installed, broken, or its target needs more settings)."""
    import jsonschema

    from providers import registry
    from providers.base import variant_of

    kind = config.get("provider")
    if kind not in registry.kinds():
        return "is not installed"
    try:
        variant = variant_of(registry.load(str(kind)), config)
    except MlopsError:  # a broken plugin: as if it were not installed (the fallback validates)
        return "failed to load"
    kind_schema = variant.schema()
    schema = kind_schema.target
    missing = [key for key in schema.get("required", []) if key not in config]
    if missing:
        return f"needs {', '.join(missing)} (not in the v1 file)"
    error = next(iter(jsonschema.Draft202012Validator(schema).iter_errors(dict(config))), None)
    if error is not None:
        return f"does not accept this target ({one_line(error.message, 100)})"
    return frozenset(kind_schema.deploy.get("properties", {}))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _map_deploy(data: dict[str, Any], compute: str, key_var: str) -> tuple[dict[str, Any], list[str]]:
    """v1 deployment settings in our vocabulary, plus ``key (reason)`` notes for what has none."""
    deploy: dict[str, Any] = {}
    notes: list[str] = []
    if _number(data.get("port")):
        deploy["port"] = int(data["port"])
    resources = data.get("containerResourceRequirements")
    if isinstance(resources, dict):
        for v1, ours in (
            ("cpu", "cpu"),
            ("memoryInGB", "memory_gb"),
            ("cpuLimit", "cpu_limit"),
            ("memoryInGBLimit", "memory_gb_limit"),
        ):
            if _number(resources.get(v1)):
                deploy[ours] = resources[v1]
    auth_default = compute == "aks"  # AKS turns key auth on by default, local and ACI do not
    auth = data.get("authEnabled", auth_default)
    deploy["auth"] = "key" if auth is True else "none"
    keys = data.get("keys")
    if isinstance(keys, dict):
        for v1, ours, suffix in (
            ("primaryKey", "primary_key", "PRIMARY_KEY"),
            ("secondaryKey", "secondary_key", "SECONDARY_KEY"),
        ):
            if keys.get(v1):
                deploy[ours] = f"${{{key_var}_{suffix}}}"
                notes.append(f"keys.{v1} (not copied: set {key_var}_{suffix} in the environment to its value)")
    scaler = data.get("autoScaler")
    replicas = data.get("numReplicas")
    if isinstance(scaler, dict) and scaler.get("autoscaleEnabled", replicas is None) is not False:
        autoscale = {
            ours: scaler[v1]
            for v1, ours in (
                ("minReplicas", "min_replicas"),
                ("maxReplicas", "max_replicas"),
                ("targetUtilization", "target_utilization"),
                ("refreshPeriodInSeconds", "refresh_seconds"),
            )
            if _number(scaler.get(v1))
        }
        if autoscale:
            deploy["autoscale"] = autoscale
    if _number(replicas):
        deploy["replicas"] = int(replicas)
    for v1, ours in (
        ("scoringTimeoutMs", "scoring_timeout_ms"),
        ("maxConcurrentRequestsPerContainer", "max_concurrent_requests"),
        ("maxQueueWaitMs", "max_queue_wait_ms"),
        ("gpuCores", "gpu"),
    ):
        if _number(data.get(v1)):
            deploy[ours] = data[v1]
    probe = data.get("livenessProbeRequirements")
    if isinstance(probe, dict):
        mapped = {
            ours: probe[v1]
            for v1, ours in (
                ("periodSeconds", "period_s"),
                ("initialDelaySeconds", "initial_delay_s"),
                ("timeoutSeconds", "timeout_s"),
                ("successThreshold", "success_threshold"),
                ("failureThreshold", "failure_threshold"),
            )
            if _number(probe.get(v1))
        }
        if mapped:
            deploy["liveness_probe"] = mapped
    if isinstance(data.get("dnsNameLabel"), str):
        deploy["dns_name_label"] = data["dnsNameLabel"]
    for key, reason in _NO_EQUIVALENT.items():
        value = data.get(key)
        if value not in (None, False, "", {}) and not (
            key == "dataCollection" and isinstance(value, dict) and not value.get("storageEnabled")
        ):
            notes.append(f"{key} ({reason})")
    for key in sorted(set(data) - _DEPLOY_KEYS):
        notes.append(f"{key} (not a v1 deployment setting; ignored)")
    return deploy, notes


def _stage(path: Path, deploy_fields: DeployFields, key_var: str, warnings: list[str]) -> _Stage:
    v1_config = read_config(path)
    data = v1_config.data
    compute_raw = data.get("computeType")
    if not isinstance(compute_raw, str) or not compute_raw.strip():
        raise _problem(v1_config, None, 'computeType is missing: set "computeType" to local, ACI or AKS')
    compute = compute_raw.strip().lower()
    if compute not in _STAGE_PROVIDER:
        raise _problem(
            v1_config,
            "computeType",
            f"unknown computeType {one_line(compute_raw, 40)!r}: use local, "
            "ACI or AKS (IoT Edge deployments cannot be imported)",
        )
    deploy, notes = _map_deploy(data, compute, key_var)
    config: dict[str, Any] = {"provider": _STAGE_PROVIDER[compute]}
    for v1, ours in (("location", "location"), ("namespace", "namespace"), ("computeTargetName", "cluster")):
        if isinstance(data.get(v1), str):
            config[ours] = data[v1]
    fit = deploy_fields(config)
    target_notes: list[str] = []
    if isinstance(fit, str):
        wanted = ", ".join(f"{k}: {v}" for k, v in config.items())
        target_notes.append(f"stands in for {wanted} (that provider {fit})")
        fallback = {"provider": "local"} if compute == "local" else {"provider": "local", "engine": "docker"}
        how = "a local process" if compute == "local" else "a local Docker container (cpu and memory limits kept)"
        warnings.append(
            f"{_shown(path)}: computeType {compute_raw}: the {config['provider']!r} provider {fit}; "
            f"its target runs the service as {how}"
        )
        for key in sorted(set(config) - {"provider"}):
            notes.append(f"{key}: {config[key]} (a setting of the {config['provider']} target)")
        config = fallback
        fit = deploy_fields(config)
    accepted = fit if isinstance(fit, frozenset) else frozenset()
    for key in sorted(set(deploy) - accepted):
        value = deploy.pop(key)
        if key == "auth" and value == "none":
            continue
        notes.append(f"{key}: {json.dumps(value)} (the target does not take it)")
    port = deploy.get("port")
    if isinstance(port, int) and not 1024 <= port <= 65535:
        notes.append(f"port: {port} (outside 1024-65535; auto used)")
        deploy["port"] = "auto"
    if "port" in accepted:
        deploy.setdefault("port", "auto")
    for note in notes:
        warnings.append(f"{_shown(path)}: {note}")
    return _Stage(_shown(path), compute, compute, config, dict(sorted(deploy.items())), notes, target_notes)
