"""Kubernetes targets (``kubernetes``, ``aks``, ``fpga``): each service is a Deployment, a Service, a key
Secret and, with ``autoscale``, a HorizontalPodAutoscaler, written with server-side apply.

Live state is one LIST per kind in the target's namespace, by our labels, whatever the number of
services. Apply waits for the rollout by ``kubectl rollout status``'s rules, fails early on pods that
cannot be scheduled, pull their image or start, sends the sample request through the API server's
service proxy, and on an update that fails re-applies the previous objects so the old version keeps
serving. A service nobody can schedule (an FPGA resource no node offers) is left in place and
reported: its spec matches, so the next plan does not replace it, and it starts by itself when a
node appears.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import yaml

from planner.addresses import Address
from planner.errors import CancelledError
from planner.resources import FAILED, HEALTHY, UNHEALTHY, UNSCHEDULABLE, Health, Live, Resource, Version

from ..base import (
    Endpoint,
    LocksItself,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    Reachable,
    Renders,
    Rules,
    Unreachable,
    as_events,
    environment_variables,
)
from ..images import ImageTarget
from . import health as healths
from . import manifests, schema
from .client import Cluster, Forbidden, NotFound
from .leader import LeaderLease
from .lease import LeaseLock
from .manifests import MANAGED_BY, Placement, label

DEFAULT_NAMESPACE = "default"
POLL_S = 0.5
LOG_LINES = 5
ROLLBACK_WAIT_S = 120


class RolloutFailed(ProviderError):
    """The new pods did not serve; ``state`` is the seed's state they are in."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


class KubernetesProvider(ImageTarget, Reachable, Renders, LocksItself, Provider):
    kind: ClassVar[str] = "kubernetes"
    traffic_split: ClassVar[bool] = True   # a canary or mirror share per version (planner.rollout)

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        super().__init__(target=target, config=config, context=context)
        self.init_images(context, self.config.get("registry"), log_dir=context.state_dir / "kubernetes" / "builds")
        self._cluster: Cluster | None = None
        self._namespace_ok = False

    # -- lifecycle ------------------------------------------------------------------------------
    def kube_context(self) -> str | None:
        return self.config.get("context") or None

    def kubeconfig(self) -> str | None:
        return self.config.get("kubeconfig") or None

    def connect(self) -> None:
        """Load the kubeconfig and ask the API server once; failure is one line naming both."""
        cluster = Cluster(self.kubeconfig(), self.kube_context())
        try:
            cluster.server_version()
        except ProviderError as exc:
            raise Unreachable(f"the API server of {cluster.where} ({cluster.host}) does not "
                              f"answer: {exc}") from None
        self._cluster = cluster

    @property
    def cluster(self) -> Cluster:
        self.ensure_connected()
        assert self._cluster is not None
        return self._cluster

    @property
    def namespace(self) -> str:
        return str(self.config.get("namespace") or DEFAULT_NAMESPACE)

    def describe(self) -> str:
        return f"target {self.target!r} ({self.kind}, namespace {self.namespace})"

    # -- schema and spec ------------------------------------------------------------------------
    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return schema.target_schema(cls.kind)

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        return schema.deploy_schema()

    def normalize_deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        return schema.normalize(deploy)

    def service_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The spec plus its image's content address, so a plan shows which image changes."""
        return self.with_image(name, spec)

    def placement(self) -> Placement:
        return Placement()

    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """Recreate Failed/Unhealthy instances; never Unschedulable ones (they would come back the same)."""
        return Rules(replace_on=frozenset({FAILED, UNHEALTHY}))

    # -- objects --------------------------------------------------------------------------------
    def _pull_config(self) -> dict[str, Any] | None:
        credentials = self.pull_credentials()
        return manifests.dockerconfig(str(self.image_registry()), *credentials) if credentials else None

    def _service(self, name: str, spec: Mapping[str, Any], *, image: str, model_dir: str, entry_script: str,
                 fingerprint: str, sensitive: Sequence[str], keys: Mapping[str, str],
                 git_commit: str | None = None, git_dirty: bool | None = None) -> manifests.Service:
        return manifests.Service(
            name=name, namespace=self.namespace, project=self.context.project, target=self.target, spec=spec,
            image=image, model_dir=model_dir, entry_script=entry_script, fingerprint=fingerprint,
            sensitive=tuple(sorted(sensitive)),
            git_commit=str(self.context.git.get("commit") or "") if git_commit is None else git_commit,
            git_dirty=bool(self.context.git.get("dirty")) if git_dirty is None else git_dirty,
            service_type=str(self.config.get("service_type") or "ClusterIP"), keys=keys,
            pull_secret=self._pull_config(), placement=self.placement())

    def _desired_service(self, desired: Resource, image: str, keys: Mapping[str, str]) -> manifests.Service:
        recipe = self.images.recipe(desired)
        svc = self._service(desired.address.name, desired.spec, image=image, model_dir=recipe.model_dir,
                            entry_script=desired.inputs["entry_script"], fingerprint=desired.fingerprint,
                            sensitive=desired.sensitive, keys=keys)
        return dataclasses.replace(svc, env_values=environment_variables(desired))

    def render(self, desired: Resource) -> str | None:
        """The objects apply sends, secrets redacted; the image is shown by tag (apply pins its digest)."""
        svc = self._desired_service(desired, self.images.ref(desired.address.name, desired.spec), {})
        if desired.spec["deploy"].get("auth") == "key":
            stored = self.keys.load(desired.address.name)
            keys = {"primary": desired.secrets.get("primary_key") or stored.get("primary", ""),
                    "secondary": desired.secrets.get("secondary_key") or stored.get("secondary", "")}
            digest = manifests.keys_digest(keys) if keys["primary"] and keys["secondary"] else "(set at apply)"
            svc = dataclasses.replace(svc, keys_digest=digest)
        docs = [_redact_env(manifests.redacted(o), desired.sensitive) for o in manifests.objects(svc)]
        head = f"# image {svc.image} is pinned to its pushed digest (repository@sha256:...) at apply\n"
        return head + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)

    # -- live state -----------------------------------------------------------------------------
    def rbac(self) -> str:
        """The Role and ClusterRole this target needs (``mlops render --rbac``)."""
        from . import rbac
        return rbac.render(self.namespace)

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
        out = []
        for d in deployments:
            name = d["metadata"]["labels"].get(label("service"))
            if not name or label("spec") not in (d["metadata"].get("annotations") or {}):
                continue
            mine = [p for p in pods if p["metadata"]["labels"].get(label("service")) == name]
            out.append(self._live(d, replica_sets, mine, services.get(name), events))
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

    def _live(self, deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]],
              pods: Sequence[Mapping[str, Any]], service: Mapping[str, Any] | None,
              events: Mapping[str, str]) -> Live:
        meta = deployment["metadata"]
        annotations = meta.get("annotations") or {}
        name = meta["labels"][label("service")]
        spec = json.loads(annotations[label("spec")])
        assessment = healths.assess(deployment, replica_sets, pods, events)
        h = assessment.health
        if assessment.problem is not None and assessment.problem.wants_logs:
            lines = self._last_lines(assessment.problem.pod)
            if lines:
                h = Health(h.state, f"{h.message}: {' | '.join(lines)}", h.ready, h.desired, h.failed)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = list(container.get("args") or [])
        drift = _drift(spec, deployment, container)
        if drift:   # changed behind our back (kubectl scale / set image): the plan shows it, apply takes it back
            spec = {**spec, "drift": drift}
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
            "message": h.message,
            "replicas": f"{h.ready or 0}/{h.desired}",
        }
        return Live(Address("service", name), spec, h.state, target=self.target, provider=self.kind,
                    details=details, sensitive=frozenset(json.loads(annotations.get(label("sensitive"), "[]"))),
                    health=h, versions=Version.only(spec, meta.get("uid"), h))

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

    def _proxy_path(self, name: str, instance: str | None = None) -> str:
        if instance:
            return f"/api/v1/namespaces/{self.namespace}/pods/{instance}:{manifests.PORT}/proxy/score"
        return f"/api/v1/namespaces/{self.namespace}/services/{name}:http/proxy/score"

    # -- plan -----------------------------------------------------------------------------------
    def plan_warnings(self, desired: Sequence[Resource]) -> list[str]:
        """Extended resources (FPGA, GPU) that no node's allocatable offers: those pods would wait forever."""
        wanted: dict[str, list[str]] = {}
        for r in desired:
            for res in manifests.resources(r.spec["deploy"], self.placement())["limits"]:
                if "/" in res:
                    wanted.setdefault(res, []).append(r.address.name)
        if not wanted:
            return []
        self.ensure_connected()
        try:
            nodes = self.cluster.list("Node")
        except Forbidden:
            return [f"cannot list nodes to check that one offers {', '.join(sorted(wanted))} (the credentials may "
                    "not list nodes)"]
        out = []
        selector = self.placement().node_selector
        eligible = [n for n in nodes
                    if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
        for res, names in sorted(wanted.items()):
            offering = [n for n in eligible if _quantity((n.get("status") or {}).get("allocatable", {}).get(res)) > 0]
            if not offering:
                matching = f", {len(eligible)} matching the node_selector" if selector else ""
                out.append(f"no node offers {res} in its allocatable ({len(nodes)} nodes checked{matching}): "
                           f"{', '.join(sorted(names))} will be Unschedulable until one does (install the "
                           "device plugin on a node with the device)")
            if res.startswith("fpga.intel.com/"):
                out.append(f"{res} comes from Intel's FPGA device plugin, which is deprecated (0.32 was its "
                           "last release); AMD/Xilinx's plugin is maintained")
        return out

    # -- lock -----------------------------------------------------------------------------------
    def apply_lock(self, holder: str, cancel: threading.Event | None = None
                   ) -> contextlib.AbstractContextManager[None]:
        cluster = self.cluster
        if "destroy" in holder and not self._namespace_exists():
            return contextlib.nullcontext()   # nothing of ours can be there
        self._ensure_namespace()
        timeout = float(self.config.get("lock_timeout_s", 120))
        return LeaseLock(cluster, self.namespace, self.context.project, holder, timeout_s=timeout,
                         target=self.target).held(cancel)

    def leader_lease(self, name: str, holder: str) -> LeaderLease:
        self._ensure_namespace()
        return LeaderLease(self.cluster, self.namespace, self.context.project, name, holder)

    # -- acting ---------------------------------------------------------------------------------
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

    def _keys(self, desired: Resource) -> dict[str, str]:
        """Explicit keys win; else the ones clients already have: this machine's store, or the key Secret
        that another machine's apply left in the cluster (a fresh CI runner, a reconciler replica), so an
        apply from anywhere never rotates the keys by itself."""
        name = desired.address.name
        if desired.spec["deploy"].get("auth") == "key" and not self.keys.load(name):
            found = self._cluster_keys(name)
            if found:
                self.keys.save(name, found)
        return self.keys.keys_for(name, desired.spec["deploy"].get("auth"), desired.secrets)

    def _cluster_keys(self, name: str) -> dict[str, str]:
        """The keys in the service's key Secret ({} when there is none or it is unreadable)."""
        with contextlib.suppress(ProviderError, KeyError, ValueError, TypeError):
            data = self.cluster.get("Secret", manifests.key_secret_name(name), self.namespace)["data"]
            keys = {k: base64.b64decode(data[f"{k}_key"]).decode() for k in ("primary", "secondary")}
            return keys if all(keys.values()) else {}
        return {}

    def _apply_objects(self, objects: Sequence[Mapping[str, Any]], events: Any) -> None:
        for obj in objects:
            events.check()
            self.cluster.apply(obj)

    def _prune_parts(self, svc: manifests.Service) -> None:
        """Objects a service had and no longer needs (an HPA after autoscale went, a key Secret after auth)."""
        keep = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects(svc)}
        candidates = [("HorizontalPodAutoscaler", svc.name), ("Secret", manifests.key_secret_name(svc.name)),
                      ("Secret", manifests.pull_secret_name(svc.name))]
        for kind, name in candidates:
            if (kind, name) in keep:
                continue
            try:
                found = self.cluster.get(kind, name, self.namespace)
            except NotFound:
                continue
            if (found["metadata"].get("labels") or {}).get(label("project")) == self.context.project:
                self.cluster.delete(kind, name, self.namespace)

    def create(self, desired: Resource, progress: Progress) -> Live:
        events = as_events(progress)
        self.ensure_connected()
        name = desired.address.name
        try:
            self._ensure_namespace()
            self._check_not_foreign(name)
            image = self._pushed_image(desired, events)
            svc = self._desired_service(desired, image, self._keys(desired))
            events.step(f"applying {len(manifests.objects(svc))} objects to {self.namespace} (server-side apply)")
            self._apply_objects(manifests.objects(svc), events)
            self._prune_parts(svc)
            self._wait_rollout(desired, events)
        except RolloutFailed as exc:
            hint = ("; it is left in place and starts by itself when a node offers what it asks "
                    "(the next plan leaves it alone)" if exc.state == UNSCHEDULABLE
                    else "; see `mlops logs " + name + "`")
            raise ProviderError(f"{desired.address}: {exc.state}: {exc}{hint}") from None
        except (CancelledError, KeyboardInterrupt):
            with contextlib.suppress(Exception):
                self._delete_service(name, self.target)
            raise
        return self._read_one(name)

    def update(self, desired: Resource, live: Live, progress: Progress) -> Live:
        events = as_events(progress)
        self.ensure_connected()
        name = desired.address.name
        image = self._pushed_image(desired, events)
        svc = self._desired_service(desired, image, self._keys(desired))
        try:
            events.step(f"applying {len(manifests.objects(svc))} objects to {self.namespace} (server-side apply)")
            self._apply_objects(manifests.objects(svc), events)
            self._prune_parts(svc)
            self._wait_rollout(desired, events)
        except (ProviderError, CancelledError) as exc:   # RolloutFailed, or the API refused an object
            cause = f"{exc.state}: {exc}" if isinstance(exc, RolloutFailed) else \
                "cancelled" if isinstance(exc, CancelledError) else str(exc)
            events.step(f"the new version failed ({cause}); rolling back to the previous one")
            try:
                self._rollback(live)
            except ProviderError as again:
                raise ProviderError(f"{desired.address}: the new version failed ({cause}) and the rollback failed "
                                    f"too ({again}); see `mlops status`") from None
            if isinstance(exc, CancelledError):
                raise
            raise ProviderError(f"{desired.address}: the new version failed ({cause}); rolled back, the previous "
                                f"version keeps serving (see `mlops logs {name}`)") from None
        return self._read_one(name)

    def _rollback(self, live: Live) -> None:
        """Re-apply the previous objects (its spec, image digest and keys) and wait for them (bounded)."""
        name = live.address.name
        keys = self.keys.load(name) if live.spec.get("deploy", {}).get("auth") == "key" else {}
        spec = {k: v for k, v in live.spec.items() if k != "drift"}
        old = self._service(name, spec, image=str(live.details["image"]), model_dir=str(live.details["model_dir"]),
                            entry_script=str(live.details["entry_script"]),
                            fingerprint=str(live.details.get("fingerprint_label") or ""),
                            sensitive=sorted(live.sensitive), keys=keys,
                            git_commit=str((live.details.get("git") or {}).get("commit") or ""),
                            git_dirty=bool((live.details.get("git") or {}).get("dirty")))
        for obj in manifests.objects(old):
            self.cluster.apply(obj)
        self._prune_parts(old)
        deadline = time.monotonic() + ROLLBACK_WAIT_S
        while time.monotonic() < deadline:
            a = self._observe(name)
            if a.rollout.done or a.health.state in (UNSCHEDULABLE, FAILED):
                return   # back in service, or the old version was itself stuck: waiting changes nothing
            time.sleep(POLL_S)

    def _observe(self, name: str) -> healths.Assessment:
        ns, cluster = self.namespace, self.cluster
        sel = manifests.owner_selector(self.context.project, self.target, name)
        d = cluster.get("Deployment", name, ns)
        pods = cluster.list("Pod", ns, labels=sel)
        replica_sets = cluster.list("ReplicaSet", ns, labels=sel)
        return healths.assess(d, replica_sets, pods, self._scheduling_events(pods))

    def _wait_rollout(self, desired: Resource, events: Any) -> None:
        """Wait like ``kubectl rollout status``; fail early on pods that will not serve; then the smoke test."""
        name = desired.address.name
        limit = desired.spec["deploy"]["progress_deadline_s"] + 30
        deadline = time.monotonic() + limit
        while True:
            events.check()
            a = self._observe(name)
            h = a.health
            events.waiting("replicas", h.ready or 0, h.desired or 0)
            if h.state == HEALTHY:
                break
            if h.state in (FAILED, UNSCHEDULABLE):
                raise RolloutFailed(h.state, h.message)
            if h.state == UNHEALTHY:
                lines = self._last_lines(a.problem.pod) if a.problem else []
                raise RolloutFailed(UNHEALTHY, h.message + (f": {' | '.join(lines)}" if lines else ""))
            if time.monotonic() >= deadline:
                raise RolloutFailed(FAILED, f"rollout not finished after {limit}s: {h.message}")
            events.sleep(POLL_S)
        sample = desired.inputs.get("sample_request")
        if sample is None or not (h.desired or 0):
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

    def _read_one(self, name: str) -> Live:
        for live in self.read():
            if live.address.name == name:
                return live
        raise ProviderError(f"service.{name}: its Deployment vanished from {self.namespace} during apply")

    def delete(self, live: Live, progress: Progress) -> None:
        """Everything labelled as this service on this target; what it owns goes with it (ReplicaSets, pods)."""
        progress(f"deleting the objects of {live.address.name} in {self.namespace}")
        self._delete_service(live.address.name, live.target or self.target)

    def _delete_service(self, name: str, target: str) -> None:
        sel = manifests.owner_selector(self.context.project, target, name)
        for kind in ("HorizontalPodAutoscaler", "Service", "Deployment", "Secret"):
            for obj in self.cluster.list(kind, self.namespace, labels=sel):
                self.cluster.delete(kind, obj["metadata"]["name"], self.namespace)

    # -- using ----------------------------------------------------------------------------------
    def _headers_for(self, live: Live) -> dict[str, str]:
        if live.details.get("auth") != "key":
            return {}
        # another machine applied it: the key Secret in the cluster has them
        primary = (self.keys.load(live.address.name) or self._cluster_keys(live.address.name)).get("primary")
        return {"Authorization": f"Bearer {primary}"} if primary else {}

    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint | None:
        url = str(live.details.get("endpoint") or "")
        if instance:
            url = f"{self.cluster.host}{self._proxy_path(live.address.name, instance)}"
        return Endpoint(scoring_url=url, headers=self._headers_for(live)) if url else None

    def _post(self, name: str, body: bytes, headers: Mapping[str, str], *, instance: str | None = None,
              timeout: float = 120) -> tuple[int, bytes]:
        return self.cluster.proxy("POST", self._proxy_path(name, instance), body=body,
                                  headers={**headers, "Content-Type": "application/json"}, timeout=timeout)

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        """Through the LoadBalancer address when it has one, else the API server's service (or pod) proxy."""
        url = str(live.details.get("endpoint") or "")
        if instance is None and url.startswith("http") and "/proxy/" not in url:
            return super().call(live, body, timeout=timeout)
        if instance is not None and instance not in live.details.get("pods", []):
            known = ", ".join(live.details.get("pods") or []) or "none"
            raise ProviderError(f"{live.address}: no pod {instance!r} (pods: {known})")
        status, answer = self._post(live.address.name, body, self._headers_for(live), instance=instance,
                                    timeout=timeout)
        return status, answer, f"{self.cluster.host}{self._proxy_path(live.address.name, instance)}"

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        """Every pod's lines prefixed with its name (``instance``: one pod); ``follow`` merges them live."""
        pods = list(live.details.get("pods") or [])
        if instance is not None:
            if instance not in pods:
                raise ProviderError(f"{live.address}: no pod {instance!r} (pods: {', '.join(pods) or 'none'})")
            pods = [instance]
        if not pods:
            raise ProviderError(f"{live.address}: no pods run (see `mlops status`)")
        if not follow:
            for pod in pods:
                for line in self._pod_lines(pod, tail=tail, follow=False):
                    yield f"[{pod}] {line}"
            return
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(pod: str) -> None:
            try:
                for line in self._pod_lines(pod, tail=tail, follow=True):
                    lines.put(f"[{pod}] {line}")
            finally:
                lines.put(None)

        for pod in pods:
            threading.Thread(target=pump, args=(pod,), daemon=True).start()
        open_streams = len(pods)
        while open_streams:
            item = lines.get()
            if item is None:
                open_streams -= 1
            else:
                yield item

    def _pod_lines(self, pod: str, *, tail: int | None, follow: bool) -> Iterator[str]:
        try:
            yield from self.cluster.pod_log(pod, self.namespace, tail=tail, follow=follow)
        except ProviderError as exc:
            yield f"(no logs: {exc})"


class AksProvider(KubernetesProvider):
    """Azure Kubernetes Service: the same kind; its context defaults to the cluster's name (what
    ``az aks get-credentials`` writes) and an unreachable cluster says how to fetch its credentials."""

    kind: ClassVar[str] = "aks"

    def fetches_credentials(self) -> bool:
        """``subscription_id`` + ``resource_group`` + ``cluster`` and no ``kubeconfig``: ask ARM for it."""
        return not self.config.get("kubeconfig") and all(
            self.config.get(k) for k in ("subscription_id", "resource_group", "cluster"))

    def kubeconfig(self) -> str | None:
        if self.fetches_credentials():
            from .aks import fetch_user_kubeconfig

            dest = self.context.state_dir / "kubernetes" / f"{self.target}.kubeconfig"
            return str(fetch_user_kubeconfig(self.config, dest))
        return super().kubeconfig()

    def kube_context(self) -> str | None:
        if self.fetches_credentials():
            return self.config.get("context") or None   # the fetched file's own current context
        return self.config.get("context") or self.config.get("cluster") or None

    def connect(self) -> None:
        try:
            super().connect()
        except Unreachable as exc:
            rg, cluster = self.config.get("resource_group", "RG"), self.config.get("cluster", "CLUSTER")
            if self.fetches_credentials():
                raise
            raise Unreachable(f"{exc} (fetch the credentials with: az aks get-credentials --resource-group {rg} "
                              f"--name {cluster}, or set subscription_id to have mlops fetch them)") from None


class FpgaProvider(KubernetesProvider):
    """Pods that request an FPGA device plugin's extended resource (request = limit) on matching nodes."""

    kind: ClassVar[str] = "fpga"

    def placement(self) -> Placement:
        return Placement(resource=str(self.config["resource"]), count=int(self.config.get("count", 1)),
                         node_selector=dict(self.config.get("node_selector") or {}),
                         tolerations=tuple(self.config.get("tolerations") or ()))


def _drift(spec: Mapping[str, Any], deployment: Mapping[str, Any], container: Mapping[str, Any]) -> str | None:
    """What of ours someone changed in the cluster, found in what the LIST already returned.

    Only fields the API server returns as they were sent: the replica count (without an HPA) and
    which repository the image comes from (it runs by digest; another image means ``set image``).
    """
    found = []
    deploy = spec.get("deploy") or {}
    replicas = (deployment.get("spec") or {}).get("replicas")
    if "autoscale" not in deploy and "replicas" in deploy and replicas != deploy["replicas"]:
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


def _quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (only what allocatable counts of devices use: integers, k, m)."""
    if value is None:
        return 0.0
    text = str(value)
    try:
        if text.endswith("m"):
            return float(text[:-1]) / 1000
        if text.endswith("k"):
            return float(text[:-1]) * 1000
        return float(text)
    except ValueError:
        return 0.0


def _redact_env(obj: dict[str, Any], sensitive: frozenset[str]) -> dict[str, Any]:
    """Environment variable values the manifest marks sensitive print as ``(sensitive)`` too."""
    if obj.get("kind") != "Deployment":
        return obj
    hidden = {p.split(".", 2)[2] for p in sensitive if p.startswith("deploy.environment_variables.")}
    for c in obj["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env") or []:
            if e["name"] in hidden and "value" in e:
                e["value"] = manifests.SENSITIVE
    return obj
