"""Writing a service's objects and waiting for them: ``kubectl rollout status``'s rules, the smoke
test through the service proxy, and putting the previous objects back when a new version fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from planner.errors import ProviderError
from planner.resources import FAILED, HEALTHY, UNHEALTHY, UNSCHEDULABLE, Live, Resource

from . import health as healths
from . import manifests
from .client import Forbidden, NotFound
from .manifests import MANAGED_BY, label

if TYPE_CHECKING:
    from ..base import Progress
    from .client import Cluster

POLL_S = 0.5
ROLLBACK_WAIT_S = 120


class RolloutFailed(ProviderError):
    """The new pods did not serve; ``state`` is the seed's state they are in."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


class Applying:
    """Mixin of the provider: namespace, objects, waiting, rollback and deletion."""

    cluster: Cluster
    namespace: str
    target: str
    context: Any
    keys: Any
    _namespace_ok: bool

    if TYPE_CHECKING:
        def _service(self, name: str, spec: Mapping[str, Any], **kw: Any) -> manifests.Service: ...
        def _scheduling_events(self, pods: Sequence[Mapping[str, Any]]) -> dict[str, str]: ...
        def _last_lines(self, pod: str) -> list[str]: ...
        def _keys(self, desired: Resource) -> dict[str, str]: ...
        def _cluster_keys(self, name: str) -> dict[str, str]: ...
        def _post(self, name: str, body: bytes, headers: Mapping[str, str], *, instance: str | None = None,
                  timeout: float = 120) -> tuple[int, bytes]: ...
        def ensure_image(self, desired: Resource, progress: Progress) -> Any: ...

    # -- namespace and ownership ----------------------------------------------------------------
    def _namespace_exists(self) -> bool:
        """Whether the namespace exists; credentials scoped to it may not read it, and then it does."""
        try:
            self.cluster.get("Namespace", self.namespace)
            return True
        except NotFound:
            return False
        except Forbidden:
            return True

    def _ensure_namespace(self) -> None:
        """Create the namespace with our labels when missing; an existing one is used as it is."""
        if self._namespace_ok:
            return
        if not self._namespace_exists():
            self.cluster.apply(manifests.namespace(self.namespace, self.context.project))
        self._namespace_ok = True

    def _check_not_foreign(self, name: str) -> None:
        """Refuse to take over a same-named Deployment that is not this project's."""
        try:
            found = self.cluster.get("Deployment", name, self.namespace)
        except NotFound:
            return
        labels = found["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY) != "mlops" or labels.get(label("project")) != self.context.project:
            raise ProviderError(f"service.{name}: a Deployment {self.namespace}/{name} already exists and is not "
                                f"managed by mlops project {self.context.project!r}; rename the service or "
                                "remove that Deployment")

    def _pushed_image(self, desired: Resource, progress: Progress) -> str:
        built = self.ensure_image(desired, progress)
        return built.digest_ref or built.ref

    # -- writing --------------------------------------------------------------------------------
    def _apply_objects(self, objects: Sequence[Mapping[str, Any]], events: Any) -> None:
        for obj in objects:
            if events is not None:
                events.check()
            try:
                self.cluster.apply(obj)
            except NotFound:
                if obj["kind"] != "HTTPRoute":
                    raise
                raise ProviderError(f"{self.namespace}/{obj['metadata']['name']}: the API server has no HTTPRoute "
                                    "kind: install the Gateway API's standard CRDs (gateway.networking.k8s.io) or "
                                    "remove the target's gateway setting") from None

    def _write_service(self, svc: manifests.Service, events: Any) -> None:
        """Apply a service's objects and remove the parts it no longer has. An HPA the service dropped goes
        first: removed after, its controller could scale the Deployment back between our write of
        ``replicas`` and the HPA's deletion (seen on the real control plane); before, the Deployment keeps
        the count it has until ours lands."""
        self._prune_parts(svc, kinds=("HorizontalPodAutoscaler",))
        self._apply_objects(manifests.objects(svc), events)
        self._prune_parts(svc)

    def _prune_parts(self, svc: manifests.Service, kinds: Sequence[str] | None = None) -> None:
        """Objects a service had and no longer needs (an HPA after autoscale went, a key Secret after auth,
        an HTTPRoute after the target's gateway went); only those of ``kinds`` when given."""
        keep = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects(svc)}
        candidates = [("HorizontalPodAutoscaler", svc.name), ("Secret", manifests.key_secret_name(svc.name)),
                      ("Secret", manifests.pull_secret_name(svc.name)), ("HTTPRoute", svc.name)]
        for kind, name in candidates:
            if (kind, name) in keep or (kinds is not None and kind not in kinds):
                continue
            try:
                found = self.cluster.get(kind, name, self.namespace)
            except NotFound:   # missing, or (HTTPRoute) a cluster without the Gateway API
                continue
            except Forbidden:
                if kind == "HTTPRoute":   # credentials that cannot read routes never made one
                    continue
                raise
            if (found["metadata"].get("labels") or {}).get(label("project")) == self.context.project:
                self.cluster.delete(kind, name, self.namespace)

    def _live_service(self, live: Live) -> manifests.Service:
        """The objects of the version ``live`` describes (its spec, image digest and keys), to put them back.
        The keys are this machine's, else the key Secret's (their digest is in the pod template)."""
        name = live.address.name
        keys = (self.keys.load(name) or self._cluster_keys(name)) if live.spec.get("deploy", {}).get("auth") == "key" \
            else {}
        spec = {k: v for k, v in live.spec.items() if k != "drift"}
        return self._service(name, spec, image=str(live.details["image"]), model_dir=str(live.details["model_dir"]),
                             entry_script=str(live.details["entry_script"]),
                             fingerprint=str(live.details.get("fingerprint_label") or ""),
                             sensitive=sorted(live.sensitive), keys=keys,
                             git_commit=str((live.details.get("git") or {}).get("commit") or ""),
                             git_dirty=bool((live.details.get("git") or {}).get("dirty")))

    def _rollback(self, live: Live) -> None:
        """Re-apply the previous objects and wait for them (bounded)."""
        old = self._live_service(live)
        self._write_service(old, None)
        self._settle(live.address.name)

    def _settle(self, name: str, deployment: str | None = None) -> None:
        """Wait (bounded, not cancellable: this is the way back) until a Deployment is rolled out or stuck."""
        deadline = time.monotonic() + ROLLBACK_WAIT_S
        while time.monotonic() < deadline:
            a = self._observe(name, deployment)
            if a.rollout.done or a.health.state in (UNSCHEDULABLE, FAILED):
                return   # back in service, or the old version was itself stuck: waiting changes nothing
            time.sleep(POLL_S)

    # -- waiting --------------------------------------------------------------------------------
    def _observe(self, name: str, deployment: str | None = None) -> healths.Assessment:
        """One Deployment of the service (default: the stable one) judged from its pods."""
        ns, cluster = self.namespace, self.cluster
        sel = manifests.owner_selector(self.context.project, self.target, name)
        d = cluster.get("Deployment", deployment or name, ns)
        pods = cluster.list("Pod", ns, labels=sel)
        replica_sets = cluster.list("ReplicaSet", ns, labels=sel)
        return healths.assess(d, replica_sets, pods, self._scheduling_events(pods))

    def _wait_ready(self, name: str, limit: float, events: Any, deployment: str | None = None) -> int:
        """Wait like ``kubectl rollout status``; fail early on pods that will not serve. Returns the replicas."""
        deadline = time.monotonic() + limit
        while True:
            events.check()
            a = self._observe(name, deployment)
            h = a.health
            events.waiting("replicas", h.ready or 0, h.desired or 0)
            if h.state == HEALTHY:
                return h.desired or 0
            if h.state in (FAILED, UNSCHEDULABLE):
                raise RolloutFailed(h.state, h.message)
            if h.state == UNHEALTHY:
                lines = self._last_lines(a.problem.pod) if a.problem else []
                raise RolloutFailed(UNHEALTHY, h.message + (f": {' | '.join(lines)}" if lines else ""))
            if time.monotonic() >= deadline:
                raise RolloutFailed(FAILED, f"rollout not finished after {limit:.0f}s: {h.message}")
            events.sleep(POLL_S)

    def _wait_rollout(self, desired: Resource, events: Any) -> None:
        """Wait for the stable Deployment, then the smoke test through the service."""
        name = desired.address.name
        replicas = self._wait_ready(name, desired.spec["deploy"]["progress_deadline_s"] + 30, events)
        sample = desired.inputs.get("sample_request")
        if sample is None or not replicas:
            return
        events.step("sending the sample request through the service")
        keys = self._keys(desired)
        headers = {"Authorization": f"Bearer {keys['primary']}"} if keys else {}
        try:
            status, body = self._post(name, sample.encode(), headers, timeout=60)
        except ProviderError as exc:
            raise RolloutFailed(UNHEALTHY, f"sample request could not be sent: {exc}") from None
        if status != 200:
            raise RolloutFailed(UNHEALTHY, f"sample request answered {status}: {body[:200].decode(errors='replace')}")
        try:
            json.loads(body)
        except ValueError:
            raise RolloutFailed(UNHEALTHY, "sample request answered 200 but not with JSON") from None

    # -- removing -------------------------------------------------------------------------------
    def _delete_service(self, name: str, target: str) -> None:
        sel = manifests.owner_selector(self.context.project, target, name)
        for kind in ("HTTPRoute", "HorizontalPodAutoscaler", "Service", "Deployment", "Secret"):
            try:
                found = self.cluster.list(kind, self.namespace, labels=sel)
            except (NotFound, Forbidden):
                if kind == "HTTPRoute":   # no Gateway API here, or credentials that never made a route
                    continue
                raise
            for obj in found:
                self.cluster.delete(kind, obj["metadata"]["name"], self.namespace)
