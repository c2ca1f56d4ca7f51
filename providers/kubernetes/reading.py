"""Live state of a Kubernetes target: one LIST per kind in the namespace, by our labels, read into ``Live``.

A service is its stable Deployment (named after it); during a rollout its candidate runs beside it
as ``<service>-canary`` (``track: canary``), and the stable Deployment's ``mlops.dev/rollout``
annotation says where the rollout stands. ``Live.spec`` and ``Live.status`` are then the stable
version's, ``Live.versions`` holds both with their share of the requests and their health, and
``Live.rollout`` the kept ``RolloutState``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from planner.addresses import Address
from planner.core.resources import RolloutState, spec_fingerprint
from planner.errors import ProviderError
from planner.resources import Health, Live, Version

from . import canary, manifests
from . import health as healths
from .manifests import CANARY, label

if TYPE_CHECKING:
    from .client import Cluster

LOG_LINES = 5


class LiveReading:
    """Mixin of the provider: ``read()`` and what it is made of."""

    cluster: Cluster
    namespace: str
    target: str
    kind: str
    context: Any

    if TYPE_CHECKING:
        def _proxy_path(self, name: str, instance: str | None = None) -> str: ...

    def read(self) -> list[Live]:
        """One LIST per kind in the namespace (plus the scheduler's events when a pod waits for a node)."""
        cluster, ns = self.cluster, self.namespace
        selector = manifests.owner_selector(self.context.project, self.target)
        deployments = cluster.list("Deployment", ns, labels=selector)
        if not deployments:
            return []
        replica_sets = cluster.list("ReplicaSet", ns, labels=selector)
        pods = cluster.list("Pod", ns, labels=selector)
        services = {s["metadata"]["name"]: s for s in cluster.list("Service", ns, labels=selector)}
        events = self._scheduling_events(pods)
        candidates = {d["metadata"]["labels"].get(label("service")): d for d in deployments if canary.is_canary(d)}
        out = []
        for d in deployments:
            name = d["metadata"]["labels"].get(label("service"))
            if not name or canary.is_canary(d) or label("spec") not in (d["metadata"].get("annotations") or {}):
                continue
            mine = [p for p in pods if p["metadata"]["labels"].get(label("service")) == name]
            out.append(self._live(d, replica_sets, mine, services.get(name), events, candidates.get(name)))
        return sorted(out, key=lambda lv: str(lv.address))

    def _scheduling_events(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The latest FailedScheduling message per pod; asked only when some pod is not scheduled."""
        waiting = any(c.get("type") == "PodScheduled" and c.get("status") == "False"
                      for p in pods for c in (p.get("status") or {}).get("conditions") or [])
        if not waiting:
            return {}
        found: dict[str, tuple[str, str]] = {}
        for ev in self.cluster.list("Event", self.namespace, fields="reason=FailedScheduling"):
            pod = (ev.get("involvedObject") or {}).get("name", "")
            when = str(ev.get("lastTimestamp") or ev.get("eventTime") or "")
            if pod not in found or when >= found[pod][0]:
                found[pod] = (when, str(ev.get("message") or ""))
        return {pod: message for pod, (_, message) in found.items()}

    def _assess(self, deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]],
                pods: Sequence[Mapping[str, Any]], events: Mapping[str, str]) -> Health:
        """One Deployment's health, with the last log lines of a pod that crashes."""
        assessment = healths.assess(deployment, replica_sets, pods, events)
        h = assessment.health
        if assessment.problem is not None and assessment.problem.wants_logs:
            lines = self._last_lines(assessment.problem.pod)
            if lines:
                h = Health(h.state, f"{h.message}: {' | '.join(lines)}", h.ready, h.desired, h.failed)
        return h

    def _live(self, deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]],
              pods: Sequence[Mapping[str, Any]], service: Mapping[str, Any] | None,
              events: Mapping[str, str], candidate: Mapping[str, Any] | None = None) -> Live:
        meta = deployment["metadata"]
        annotations = meta.get("annotations") or {}
        name = meta["labels"][label("service")]
        spec = json.loads(annotations[label("spec")])
        stable_pods = [p for p in pods if p["metadata"]["labels"].get(label("track")) != CANARY]
        canary_pods = [p for p in pods if p["metadata"]["labels"].get(label("track")) == CANARY]
        h = self._assess(deployment, replica_sets, stable_pods, events)
        rollout = _rollout_state(annotations)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = list(container.get("args") or [])
        drift = _drift(spec, deployment, container, counts=rollout is None)
        fingerprint = spec_fingerprint(spec)
        if drift:   # changed behind our back (kubectl scale / set image): the plan shows it, apply takes it back
            spec = {**spec, "drift": drift}
        running = {fingerprint: _serving(stable_pods)}
        versions = Version.only(spec, meta.get("uid"), h)
        canary_details = None
        if candidate is not None:
            ch = self._assess(candidate, replica_sets, canary_pods, events)
            version = canary.version_of(candidate)
            running[version] = _serving(canary_pods)
            share = _canary_share(rollout, h, ch, routed=service is not None and _routed(service))
            versions = (Version(str(meta.get("uid") or ""), fingerprint, 1.0 - share, h),
                        Version(str(candidate["metadata"].get("uid") or ""), version, share, ch))
            canary_details = {"deployment": candidate["metadata"]["name"], "version": version,
                              "pods": sorted(p["metadata"]["name"] for p in canary_pods),
                              "replicas": f"{ch.ready or 0}/{ch.desired}", "state": ch.state, "message": ch.message}
        details = {
            "endpoint": self._scoring_url(name, service),
            "namespace": self.namespace,
            "deployment_uid": meta.get("uid"),
            "image": container.get("image"),
            "model_dir": _arg(args, "--model-dir"),
            "entry_script": (_arg(args, "--entry-script") or "").removeprefix("/var/azureml-app/"),
            "fingerprint_label": meta["labels"].get(label("fingerprint"), ""),
            "git": {"commit": meta["labels"].get(label("git-commit")) or None,
                    "dirty": meta["labels"].get(label("git-dirty")) == "true"},
            "auth": spec.get("deploy", {}).get("auth", "none"),
            "pods": sorted(p["metadata"]["name"] for p in pods),
            "serving": running,
            "message": h.message,
            "replicas": f"{h.ready or 0}/{h.desired}",
        }
        if canary_details is not None:
            details["canary"] = canary_details
        return Live(Address("service", name), spec, h.state, target=self.target, provider=self.kind,
                    details=details, sensitive=frozenset(json.loads(annotations.get(label("sensitive"), "[]"))),
                    health=h, versions=versions, rollout=rollout)

    def _last_lines(self, pod: str) -> list[str]:
        try:
            lines = [ln for ln in self.cluster.pod_log(pod, self.namespace, tail=LOG_LINES * 4) if ln.strip()]
        except ProviderError:
            return []
        return [ln.strip()[:300] for ln in lines[-LOG_LINES:]]

    def _scoring_url(self, name: str, service: Mapping[str, Any] | None) -> str:
        ingress = ((service or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        if ingress:
            host = ingress[0].get("ip") or ingress[0].get("hostname")
            return f"http://{host}:{manifests.SERVICE_PORT}/score"
        return f"{self.cluster.host}{self._proxy_path(name)}"

    def _read_one(self, name: str) -> Live:
        for live in self.read():
            if live.address.name == name:
                return live
        raise ProviderError(f"service.{name}: its Deployment vanished from {self.namespace} during apply")


def _rollout_state(annotations: Mapping[str, str]) -> RolloutState | None:
    text = annotations.get(canary.ROLLOUT)
    if not text:
        return None
    try:
        return RolloutState.from_json(json.loads(text))
    except ValueError:   # not ours to fix here: someone edited it; the plan shows no rollout, apply rewrites it
        return None


def _routed(service: Mapping[str, Any]) -> bool:
    """Behind a router the Service selects the stable track only."""
    return label("track") in ((service.get("spec") or {}).get("selector") or {})


def _canary_share(state: RolloutState | None, stable: Health, candidate: Health, *, routed: bool) -> float:
    """The candidate's share of the requests: the route's weight, else its share of the ready pods."""
    if routed:
        return (state.weight if state else 0.0) / 100
    ready = (stable.ready or 0) + (candidate.ready or 0)
    return (candidate.ready or 0) / ready if ready else 0.0


def _serving(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pods that run a container (their metrics can be read)."""
    return sorted(p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Running")


def _drift(spec: Mapping[str, Any], deployment: Mapping[str, Any], container: Mapping[str, Any], *,
           counts: bool = True) -> str | None:
    """What of ours someone changed in the cluster, found in what the LIST already returned.

    Only fields the API server returns as they were sent: the replica count (without an HPA, and
    not while a rollout shares it) and which repository the image comes from (it runs by digest;
    another image means ``set image``).
    """
    found = []
    deploy = spec.get("deploy") or {}
    replicas = (deployment.get("spec") or {}).get("replicas")
    if counts and "autoscale" not in deploy and "replicas" in deploy and replicas != deploy["replicas"]:
        found.append(f"spec.replicas is {replicas}, not {deploy['replicas']}")
    repository = str(spec.get("image") or "").rsplit(":", 1)[0]
    image = str(container.get("image") or "")
    if repository and not image.startswith(f"{repository}@") and image != spec.get("image"):
        found.append(f"the container runs {image}")
    if not found:
        return None
    return "changed in the cluster: " + "; ".join(found)


def _arg(args: Sequence[str], flag: str) -> str | None:
    for i, a in enumerate(args[:-1]):
        if a == flag:
            return args[i + 1]
    return None
