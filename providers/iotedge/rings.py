"""Rings: which devices run a service's candidate version during a rollout, and where the rollout stands.

IoT Edge splits a fleet, not requests (README, "Azure IoT Edge"). The stable deployment stays as it
is; the candidate is a layered deployment of a higher priority whose target condition is the
service's condition AND a device twin tag, ``tags.mlops_rings.<key> = '<candidate's content hash>'``. A step of
weight W tags the first ``ceil(n * W / 100)`` of the n matching devices, ordered by a hash of their
device id (deterministic: the same devices at every run, a 10% ring inside the 50% one), and the
hub merges the candidate's module over the stable one's on exactly those devices. The tag's value
names the candidate, so a ring left by another candidate never matches this one's condition.

Where the rollout stands (``RolloutState``) is a label of the stable deployment: labels are the
part of a deployment that changes in place, and the stable one lives from the rollout's start
until its promotion (an aborted rollout keeps it there, so the same candidate is not retried).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from planner.resources import RolloutState

RING_TAG = "mlops_rings"
"""The device twin tag whose members name, per service, the candidate the device runs."""
ROLE_LABEL = "mlops-role"
CANDIDATE = "candidate"
"""``labels[ROLE_LABEL]`` of a candidate deployment (the stable one has no role label)."""
STATE_LABEL = "mlops-rollout"
"""The stable deployment's label holding the rollout's state as compact JSON."""
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


def ring_key(project: str, target: str, service: str) -> str:
    """The service's member of ``tags.mlops_rings``: readable, a query identifier, unique per service."""
    readable = _NOT_WORD.sub("_", service).strip("_")[:48] or "service"
    unique = hashlib.sha256(f"{project}/{target}/{service}".encode()).hexdigest()[:8]
    return f"{readable}_{unique}"


def ring_value(config_id: str) -> str:
    """The tag value naming a candidate: the content hash that ends its deployment id."""
    return config_id.rsplit("-", 1)[-1]


def tag_path(key: str) -> str:
    return f"tags.{RING_TAG}.{key}"


def ring_condition(condition: str, key: str, config_id: str) -> str:
    """The candidate deployment's target condition: the service's devices that are in its ring."""
    return f"({condition}) AND {tag_path(key)}='{ring_value(config_id)}'"


def ring_size(devices: int, weight: float) -> int:
    """Devices in a ring of ``weight`` percent: ceil(n * W / 100), 0 for 0%, all for 100%."""
    weight = min(max(float(weight), 0.0), 100.0)
    return min(devices, math.ceil(devices * weight / 100 - 1e-9))


def ring_order(device_ids: Iterable[str]) -> list[str]:
    """Devices in ring order: by a hash of the id, so rings neither follow names nor change between runs."""
    return sorted(device_ids, key=lambda d: (hashlib.sha256(d.encode()).hexdigest(), d))


def ring_members(device_ids: Iterable[str], weight: float) -> list[str]:
    ordered = ring_order(device_ids)
    return ordered[:ring_size(len(ordered), weight)]


def ring_of(twin: Mapping[str, Any], key: str) -> str | None:
    """The candidate a device twin's ring tag names for this service, if any."""
    rings = (twin.get("tags") or {}).get(RING_TAG)
    value = rings.get(key) if isinstance(rings, Mapping) else None
    return str(value) if value not in (None, "") else None


def is_candidate(config: Mapping[str, Any]) -> bool:
    return (config.get("labels") or {}).get(ROLE_LABEL) == CANDIDATE


def state_of(config: Mapping[str, Any]) -> RolloutState | None:
    """The rollout state a stable deployment keeps; None without one (or a damaged one: not ours to guess)."""
    text = (config.get("labels") or {}).get(STATE_LABEL)
    if not text:
        return None
    try:
        data = json.loads(text)
        return RolloutState.from_json(data) if isinstance(data, Mapping) else None
    except ValueError:
        return None


def state_label(state: RolloutState | None) -> str | None:
    """The label value for a state (None removes the label)."""
    return None if state is None else json.dumps(state.to_json(), separators=(",", ":"), sort_keys=True)
