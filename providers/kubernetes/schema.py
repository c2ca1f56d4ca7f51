"""Settings of the Kubernetes kinds: target settings, deploy settings (Azure ML's AKS vocabulary), defaults.

Deploy settings keep the names of Azure ML's ``AksWebservice.deploy_configuration`` in snake_case
(``cpu``, ``memory_gb``, ``autoscale``, ``liveness_probe``…), so a v1 deployment configuration
reads the same here. Defaults are filled in by ``normalize`` so that writing a default is no diff.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REGISTRY_PATTERN = r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RESOURCE_NAME = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

DEFAULTS: dict[str, Any] = {
    "replicas": 1, "cpu": 0.1, "memory_gb": 0.5, "auth": "key", "scoring_timeout_ms": 60000,
    "max_concurrent_requests_per_replica": 1, "workers": 1, "progress_deadline_s": 600,
}
PROBE_DEFAULTS: dict[str, int] = {"period_seconds": 10, "initial_delay_seconds": 310, "timeout_seconds": 2,
                                  "failure_threshold": 3, "success_threshold": 1}
"""Azure ML's AKS liveness defaults: a slow init() (a big model loading) is not killed in its first 5 minutes."""
READINESS_DEFAULTS = {**PROBE_DEFAULTS, "period_seconds": 2, "initial_delay_seconds": 0}
"""Readiness is probed from the start and often: a rollout waits for it."""
AUTOSCALE_DEFAULTS: dict[str, int] = {"min_replicas": 1, "max_replicas": 10, "target_utilization": 70,
                                      "refresh_seconds": 1}

_INT = {"type": "integer", "minimum": 1}
_PROBE = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "period_seconds": _INT, "initial_delay_seconds": {"type": "integer", "minimum": 0},
        "timeout_seconds": _INT, "failure_threshold": _INT, "success_threshold": _INT,
    },
}


def target_schema(kind: str) -> dict[str, Any]:
    """Target settings of ``kubernetes``, ``aks`` and ``fpga`` (fpga adds the device it schedules on)."""
    props: dict[str, Any] = {
        "provider": {"const": kind},
        "kubeconfig": {"type": "string", "minLength": 1,
                       "description": "kubeconfig file (default $KUBECONFIG, then ~/.kube/config)"},
        "context": {"type": "string", "minLength": 1, "description": "kubeconfig context (default: the current one)"},
        "namespace": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63,
                      "description": "namespace of the services (created with our labels if missing)"},
        "registry": {"type": "string", "pattern": REGISTRY_PATTERN,
                     "description": "where images are pushed (host[:port][/path]); pull credentials come from "
                                    "MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD"},
        "service_type": {"enum": ["ClusterIP", "LoadBalancer"],
                         "description": "ClusterIP (default: reached through the API server's proxy) or "
                                        "LoadBalancer"},
        "lock_timeout_s": {"type": "integer", "minimum": 0, "maximum": 3600,
                           "description": "how long an apply waits for another one's Lease (default 120)"},
        "gateway": {"type": "object", "additionalProperties": False, "required": ["name"],
                    "description": "a Gateway API Gateway that routes to the services: each gets an HTTPRoute "
                                   "(path /<service>), and a rollout then sets exact weights and can mirror "
                                   "requests (strategy shadow); without it a canary splits by replica ratio",
                    "properties": {"name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
                                   "namespace": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63,
                                                 "description": "the Gateway's namespace (default the target's)"}}},
    }
    if kind == "aks":
        props |= {
            "subscription_id": {"type": "string", "minLength": 1,
                                "description": "with resource_group and cluster (and no kubeconfig): fetch the "
                                               "cluster's user kubeconfig through Azure Resource Manager"},
            "resource_group": {"type": "string", "minLength": 1},
            "cluster": {"type": "string", "minLength": 1, "description": "the AKS cluster's name"},
            "arm_endpoint": {"type": "string", "pattern": r"^https://[^\s/]+(/[^\s]*)?$",
                             "description": "Azure Resource Manager (default the public cloud's)"},
        }
    required = ["registry"]
    if kind == "fpga":
        props |= {
            "resource": {"type": "string", "pattern": RESOURCE_NAME, "maxLength": 253,
                         "description": "the extended resource of the FPGA device plugin, e.g. "
                                        "amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-0"},
            "count": {"type": "integer", "minimum": 1, "maximum": 64, "description": "devices per pod (default 1)"},
            "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
            "tolerations": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "properties": {"key": {"type": "string"}, "operator": {"enum": ["Exists", "Equal"]},
                               "value": {"type": "string"},
                               "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}}}},
        }
        required.append("resource")
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


def deploy_schema() -> dict[str, Any]:
    """A service's ``deploy`` settings on any Kubernetes kind."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "replicas": {"type": "integer", "minimum": 0, "maximum": 1000},
            "cpu": {"type": "number", "exclusiveMinimum": 0, "maximum": 256, "description": "CPU cores per replica"},
            "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 4096,
                          "description": "memory per replica in GiB"},
            "gpu": {"type": "integer", "minimum": 0, "maximum": 16, "description": "nvidia.com/gpu per replica"},
            "autoscale": {
                "type": "object", "additionalProperties": False,
                "properties": {"min_replicas": _INT, "max_replicas": _INT,
                               "target_utilization": {"type": "integer", "minimum": 1, "maximum": 100},
                               "refresh_seconds": _INT},
            },
            "auth": {"enum": ["key", "none"]},
            "primary_key": {"type": "string", "minLength": 16},
            "secondary_key": {"type": "string", "minLength": 16},
            "scoring_timeout_ms": {"type": "integer", "minimum": 1},
            "max_concurrent_requests_per_replica": {"type": "integer", "minimum": 1, "maximum": 1000},
            "workers": {"type": "integer", "minimum": 1, "maximum": 64},
            "liveness_probe": _PROBE,
            "readiness_probe": _PROBE,
            "progress_deadline_s": {"type": "integer", "minimum": 10, "maximum": 86400,
                                    "description": "a rollout without progress this long fails (Kubernetes' "
                                                   "progressDeadlineSeconds)"},
            "environment_variables": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }


def normalize(deploy: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, nested ones too; with ``autoscale`` the HPA owns the count, so no ``replicas``."""
    out = {**DEFAULTS, **deploy}
    out["liveness_probe"] = {**PROBE_DEFAULTS, **(deploy.get("liveness_probe") or {})}
    out["readiness_probe"] = {**READINESS_DEFAULTS, **(deploy.get("readiness_probe") or {})}
    if "autoscale" in deploy:
        auto = {**AUTOSCALE_DEFAULTS, **(deploy.get("autoscale") or {})}
        auto["max_replicas"] = max(auto["max_replicas"], auto["min_replicas"])
        out["autoscale"] = auto
        if "replicas" not in deploy:
            out.pop("replicas")
    if not out.get("environment_variables"):
        out.pop("environment_variables", None)
    return dict(sorted(out.items()))
