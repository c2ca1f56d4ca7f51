"""The settings an ``iotedge`` target and its services accept, as JSON Schema, and their defaults."""

from __future__ import annotations

from typing import Any

from ..images import REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV
from . import manifest as mf

REGISTRY_PATTERN = r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$"
DEFAULTS: dict[str, Any] = {"port": mf.CONTAINER_PORT, "auth": "none", "restart_policy": "always",
                            "scoring_timeout_ms": 60000, "rollout_timeout_s": 600}


def target_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["hub", "registry"],
        "allOf": [{"description": "set exactly one of target_condition (which devices, over their twins) "
                                  "and device_id (one device)",
                   "oneOf": [{"required": ["target_condition"], "not": {"required": ["device_id"]}},
                             {"required": ["device_id"], "not": {"required": ["target_condition"]}}]}],
        "properties": {
            "provider": {"const": "iotedge"},
            "hub": {"type": "string", "writeOnly": True, "minLength": 1,
                    "description": "IoT Hub connection string of a shared access policy with registry "
                                   "read/write and service connect rights (e.g. ${IOTHUB_CONNECTION_STRING})"},
            "target_condition": {"type": "string", "minLength": 1,
                                 "description": "which devices run this target's services, in IoT Hub query "
                                                "syntax over device twins, e.g. tags.site='plant-3'"},
            "device_id": {"type": "string", "pattern": r"^[A-Za-z0-9\-:.+%_#*?!(),=@$]{1,128}$",
                          "description": "shorthand for one device: target_condition deviceId='ID'"},
            "registry": {"type": "string", "pattern": REGISTRY_PATTERN,
                         "description": "where images are pushed and devices pull them (host[:port][/path]); "
                                        f"credentials from {REGISTRY_USER_ENV} / {REGISTRY_PASSWORD_ENV}"},
            "device_host": {"type": "string", "minLength": 1,
                            "description": "how this machine reaches a device, e.g. '{device_id}.plant3.lan' "
                                           "or '{tags.ip}'; unset: devices are unreachable from here and "
                                           "status is health-only"},
            "priority": {"type": "integer", "minimum": 1, "maximum": 1000000,
                         "description": "priority of the first deployment of each service (default 10); each "
                                        "change goes one higher; must be above the devices' base deployment"},
        },
    }


def deploy_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "the port published on each device (default 5001)"},
            "auth": {"enum": ["key", "none"]},
            "primary_key": {"type": "string", "minLength": 16},
            "secondary_key": {"type": "string", "minLength": 16},
            "cpu": {"type": "number", "exclusiveMinimum": 0, "maximum": 64,
                    "description": "CPU cores the module may use (NanoCpus)"},
            "memory_gb": {"type": "number", "exclusiveMinimum": 0, "maximum": 512,
                          "description": "memory limit of the module in GiB"},
            "restart_policy": {"enum": sorted(mf.RESTART_POLICIES)},
            "environment_variables": {"type": "object", "additionalProperties": {"type": "string"}},
            "scoring_timeout_ms": {"type": "integer", "minimum": 1},
            "rollout_timeout_s": {"type": "integer", "minimum": 1,
                                  "description": "how long apply waits for every targeted device (default 600)"},
            "create_options": {"type": "object",
                               "description": "extra Docker create options (Binds, Devices, …), merged"},
        },
    }
