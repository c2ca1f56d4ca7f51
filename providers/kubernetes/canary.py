"""A rollout's candidate beside the stable version, as plain objects and replica counts (pure functions).

The candidate runs as its own Deployment, ``<service>-canary``, whose pods carry the Service's
selector labels and ``track: canary``; the stable Deployment keeps its name. How requests are
shared between the two:

- **Without a router** the one Service selects both tracks, so the share is the replica ratio.
  ``total`` is the service's replica count (with ``autoscale``: the HPA's count when the rollout
  started, at least ``min_replicas``; the HPA is set aside for the rollout and comes back with
  promote or abort, so it cannot fight the ratio). A step of weight w runs
  ``canary = max(1, ceil(total * w / 100))`` and ``stable = total - canary``, but the stable
  version keeps at least one pod until the weight is 100: one replica of each is the coarsest
  canary (50 %), never the whole service on an unproven version. At weight 0 (before the first
  step) the candidate has no pod: a pod behind the Service takes requests as soon as it is Ready,
  so "ready, answering nothing" does not exist without a router; its readiness is proven at the
  first step, before the stable version shrinks. A mirror needs a router.
- **With a Gateway API router** the HTTPRoute weighs the stable Service (stable track only) against
  ``<service>-canary`` exactly, and copies ``mirror`` percent of requests to the candidate with a
  RequestMirror filter. Replicas then follow capacity: the candidate gets its share of ``total``
  (at least 1, so it is ready at weight 0), the stable version its own share (at least 1 until 100).

Where the rollout stands is the ``mlops.dev/rollout`` annotation (``RolloutState`` JSON) on the
stable Deployment, written with a field manager of its own (``mlops-rollout``) so the objects
apply sends (manager ``mlops``) never erase it, and so scaling during a rollout never takes a
field away from the service's own apply. Beside it, ``mlops.dev/rollout-stable`` keeps what the stable
version's objects are made of for the rollout's lifetime: a promote rewrites the stable Deployment, and
when it fails (or is killed) the way back must not depend on what the caller still holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.core.resources import Live, spec_fingerprint

from . import manifests
from .manifests import CANARY, SERVICE_PORT, canary_name, label

ROLLOUT = label("rollout")
"""Annotation of the stable Deployment: the ``RolloutState`` JSON."""
TOTAL = label("rollout-replicas")
"""Annotation of the stable Deployment: the replica count the rollout shares (set at its start)."""
STABLE = label("rollout-stable")
"""Annotation of the stable Deployment: what rebuilds the stable version's objects (``stable_record``), so
a promote that rewrote the Deployment and then failed, or was killed, can put that version back."""
MANAGER = "mlops-rollout"
RECORDED = ("image", "model_dir", "entry_script", "fingerprint_label", "git")
"""The ``Live.details`` the stable version's objects are rebuilt from (with its spec and sensitive keys)."""


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int


def split(total: int, weight: float, mirror: float = 0.0, *, routed: bool = False) -> Split:
    """Replicas of each version for a canary ``weight`` (and ``mirror``) percent of ``total``."""
    total = max(int(total), 1)
    def share(percent: float) -> int:
        return math.ceil(total * percent / 100 - 1e-9)

    if weight >= 100:
        return Split(0, total)
    if routed:
        return Split(max(1, total - share(weight)), max(1, share(max(weight, mirror))))
    if weight <= 0:
        return Split(total, 0)
    canary = min(total, max(1, share(weight)))
    return Split(max(1, total - canary), canary)


def coarse_steps(policy: Mapping[str, Any] | None, total: int, *, tolerance: float = 5.0
                 ) -> list[tuple[float, float, Split]]:
    """The canary steps a replica ratio cannot honour within ``tolerance`` points: (asked weight, the
    share it runs as, the split). Empty behind a router (exact weights) or for a policy without steps."""
    found = []
    for step in (policy or {}).get("steps") or []:
        weight = float(step.get("weight", 0))
        if 0 < weight < 100:
            parts = split(total, weight)
            share = 100 * parts.canary / (parts.canary + parts.stable)
            if abs(share - weight) > tolerance:
                found.append((weight, share, parts))
    return found


def first_step(policy: Mapping[str, Any] | None, deploy: Mapping[str, Any], *, routed: bool
               ) -> tuple[str, int, float, float] | None:
    """For ``mlops render``: (what it is, candidate replicas, weight, mirror) at a splitting rollout's first
    step (the mirror phase when there is one), or None when the policy does not split traffic."""
    policy = policy or {}
    if policy.get("strategy") not in ("canary", "shadow") and not policy.get("mirror"):
        return None
    mirror = float((policy.get("mirror") or {}).get("percent", 0))
    weight = 0.0 if mirror else float((policy.get("steps") or [{}])[0].get("weight", 0))
    total = int(deploy.get("replicas") or (deploy.get("autoscale") or {}).get("min_replicas", 1))
    share = f"{weight:g}% of requests" + (f", {mirror:g}% mirrored" if mirror else "")
    return f"{policy['strategy']} ({share})", split(total, weight, mirror, routed=routed).canary, weight, mirror


def version_of(deployment: Mapping[str, Any]) -> str:
    """The spec fingerprint of what a Deployment of ours runs (from the spec annotation apply wrote)."""
    spec = (deployment.get("metadata", {}).get("annotations") or {}).get(label("spec"))
    return spec_fingerprint(json.loads(spec)) if spec else ""


def stable_record(live: Live) -> str:
    """The ``STABLE`` annotation for the version ``live`` describes: its spec and what its objects are made of."""
    spec = {k: v for k, v in live.spec.items() if k != "drift"}
    return json.dumps({"spec": spec, "details": {k: live.details.get(k) for k in RECORDED},
                       "sensitive": sorted(live.sensitive)}, sort_keys=True, separators=(",", ":"))


def from_record(live: Live, record: str) -> Live:
    """``live`` made to describe the version a ``stable_record`` kept (to rebuild that version's objects)."""
    kept = json.loads(record)
    return dataclasses.replace(live, spec=kept["spec"], details={**live.details, **kept["details"]},
                               sensitive=frozenset(kept["sensitive"]))


def live_version(live: Live) -> str:
    """The spec fingerprint of the version ``live`` describes (drift, a reading's note, left out)."""
    return spec_fingerprint({k: v for k, v in live.spec.items() if k != "drift"})


def is_canary(deployment: Mapping[str, Any]) -> bool:
    return (deployment.get("metadata", {}).get("labels") or {}).get(label("track")) == CANARY


def deployment(svc: manifests.Service, replicas: int) -> dict[str, Any]:
    """The candidate's Deployment: the service's pod template on the canary track, its own selector."""
    candidate = dataclasses.replace(svc, track=CANARY)
    out = manifests.deployment(candidate)
    meta = out["metadata"]
    meta["name"] = canary_name(svc.name)
    meta["labels"][label("track")] = CANARY
    meta["labels"][label("version")] = spec_fingerprint(svc.spec)[:63]
    out["spec"]["selector"]["matchLabels"][label("track")] = CANARY
    out["spec"] = {"replicas": replicas, **{k: v for k, v in out["spec"].items() if k != "replicas"}}
    return out


def service(svc: manifests.Service) -> dict[str, Any]:
    """Behind a router: the candidate's own Service, the HTTPRoute's second backend and mirror target."""
    out = manifests.service(dataclasses.replace(svc, gateway=None))
    out["metadata"]["name"] = canary_name(svc.name)
    out["metadata"]["labels"][label("track")] = CANARY
    out["spec"]["selector"][label("track")] = CANARY
    out["spec"]["type"] = "ClusterIP"
    out["spec"]["ports"] = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    return out


def objects(svc: manifests.Service, replicas: int, *, weight: float = 0.0, mirror: float = 0.0
            ) -> list[dict[str, Any]]:
    """The candidate's objects for one step (its Deployment; behind a router its Service and the route)."""
    out = [deployment(svc, replicas)]
    if svc.gateway is not None:
        out += [service(svc), manifests.http_route(svc, canary_weight=round(weight), mirror_percent=round(mirror))]
    return out


def scale(kind: str, name: str, namespace: str, replicas: int,
          annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the rollout's field manager owns on a Deployment: its replicas (and the stable one's state)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {"replicas": replicas}}
