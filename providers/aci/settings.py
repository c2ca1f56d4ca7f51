"""What a user may write for an ``aci`` target and its services, and what mlops fills in.

Deploy settings use the seed's vocabulary (Azure ML's ACI deployment configuration in snake_case);
the rules ACI itself enforces (names, tags, sizes) are in the schema so ``mlops validate`` reports
them at their line, before anything is built or sent.
"""

from __future__ import annotations

from typing import Any

CLOUDS: dict[str, tuple[str, str]] = {
    # cloud name -> (Resource Manager endpoint, login authority)
    "AzureCloud": ("https://management.azure.com", "https://login.microsoftonline.com"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    "AzureUSGovernment": ("https://management.usgovcloudapi.net", "https://login.microsoftonline.us"),
}

NAME_PATTERN = r"^(?!.*--)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""ACI container group names and DNS labels: 1-63 lowercase letters, digits, hyphens; no edge or double hyphen."""
DNS_LABEL_PATTERN = r"^(?!.*--)[a-z]([a-z0-9-]{1,61}[a-z0-9])$"
TAG_KEY_PATTERN = r"^(?![mM][lL][oO][pP][sS]-)[^<>%&\\?/\u0000-\u001f\u007f]{1,512}$"
"""Azure tag keys may not contain < > % & \\ ? / (and we keep ``mlops-`` for ourselves)."""
OWN_TAG_PREFIX = "mlops-"
MAX_TAGS = 50
MAX_USER_TAGS = 30
"""The rest of Azure's 50 tags per resource are ours (project, service, fingerprint, commit, spec)."""
REGISTRY_PATTERN = r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

DEFAULTS: dict[str, Any] = {
    "port": 5001, "auth": "none", "cpu": 0.1, "memory_gb": 0.5, "restart_policy": "Always",
    "workers": 1, "scoring_timeout_ms": 60000, "startup_timeout_s": 300,
}
"""Azure ML's AciWebservice defaults (0.1 CPU, 0.5 GB) and the runtime's port."""

GPU_REFUSED = ("not offered on ACI: its GPU SKUs (K80, P100) are retired and V100 is not supported for "
               "production; deploy GPU models to an aks target")


def target_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["provider", "subscription_id", "resource_group", "location", "registry"],
        "properties": {
            "provider": {"const": "aci"},
            "subscription_id": {"type": "string", "pattern": r"^[0-9a-fA-F-]{36}$",
                                "description": "the Azure subscription (a GUID), e.g. ${AZURE_SUBSCRIPTION_ID}"},
            "resource_group": {"type": "string", "pattern": r"^[-\w.()]{0,89}[-\w()]$",
                               "description": "an existing resource group; container groups are created in it"},
            "location": {"type": "string", "pattern": r"^[a-z0-9]{2,40}$",
                         "description": "the region, e.g. westeurope"},
            "registry": {"type": "string", "pattern": REGISTRY_PATTERN,
                         "description": "where images are pushed and pulled from (myacr.azurecr.io); pull "
                                        "credentials come from MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD"},
            "cloud": {"enum": sorted(CLOUDS), "description": "which Azure cloud (default AzureCloud)"},
            "arm_endpoint": {"type": "string", "pattern": r"^https://[^\s/]+(/[^\s]*)?$",
                             "description": "an explicit Resource Manager endpoint (Azure Stack, other clouds); "
                                            "its /metadata/endpoints names the login endpoint"},
            "ca_bundle": {"type": "string", "minLength": 1,
                          "description": "a PEM file of CAs to trust for Resource Manager (Azure Stack)"},
        },
    }


def deploy_schema() -> dict[str, Any]:
    key = {"type": "string", "minLength": 16, "writeOnly": True}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "cpu": {"type": "number", "exclusiveMinimum": 0, "maximum": 4, "multipleOf": 0.01,
                    "description": "CPU cores requested (default 0.1); a change re-creates the group"},
            "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 16, "multipleOf": 0.1,
                          "description": "memory in GB (default 0.5); a change re-creates the group"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "the port the service listens on and exposes (default 5001)"},
            "auth": {"enum": ["key", "none"]},
            "primary_key": key,
            "secondary_key": key,
            "dns_name_label": {"type": "string", "pattern": DNS_LABEL_PATTERN,
                               "description": "gives <label>.<location>.azurecontainer.io"},
            "environment_variables": {"type": "object", "maxProperties": 100,
                                      "propertyNames": {"pattern": ENV_NAME_PATTERN},
                                      "additionalProperties": {"type": "string"}},
            "restart_policy": {"enum": ["Always", "OnFailure", "Never"]},
            "location": {"type": "string", "pattern": r"^[a-z0-9]{2,40}$",
                         "description": "a region other than the target's for this service"},
            "tags": {"type": "object", "maxProperties": MAX_USER_TAGS,
                     "propertyNames": {"pattern": TAG_KEY_PATTERN},
                     "additionalProperties": {"type": "string", "maxLength": 256},
                     "description": "Azure tags on the container group; changing them does not restart it"},
            "workers": {"type": "integer", "minimum": 1, "maximum": 64},
            "scoring_timeout_ms": {"type": "integer", "minimum": 1},
            "startup_timeout_s": {"type": "integer", "minimum": 1, "maximum": 3600},
            "gpu": {"anyOf": [{"const": 0}, {"const": False}], "description": f"GPU is {GPU_REFUSED}"},
            "gpu_cores": {"anyOf": [{"const": 0}], "description": f"GPU is {GPU_REFUSED}"},
        },
    }


def normalize(deploy: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, numbers as ARM returns them (floats), empty maps and zero GPUs dropped."""
    out = {**DEFAULTS, **deploy}
    for name in ("cpu", "memory_gb"):
        if isinstance(out.get(name), int | float) and not isinstance(out[name], bool):
            out[name] = round(float(out[name]), 2)
    for name in ("environment_variables", "tags"):
        if out.get(name) == {}:
            del out[name]
    for name in ("gpu", "gpu_cores"):
        if name in out and not out[name]:
            del out[name]
    return dict(sorted(out.items()))
