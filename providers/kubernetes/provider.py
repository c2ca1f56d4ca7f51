"""Kubernetes targets (``kubernetes``, ``aks``, ``fpga``): each service is a Deployment, a Service, a key
Secret and, with ``autoscale``, a HorizontalPodAutoscaler (with a ``gateway``, an HTTPRoute), written with
server-side apply.

This module is the target's lifecycle: connecting, settings, the objects of a service, create,
update and delete. Its other jobs sit beside it: ``reading`` (live state), ``applying`` (writing
and waiting, rollback), ``access`` (keys, calls, logs, metrics), ``traffic`` (canary rollouts),
``variants`` (aks, fpga). Apply waits for the rollout by ``kubectl rollout status``'s rules, fails
early on pods that cannot be scheduled, pull their image or start, sends the sample request through
the API server's service proxy, and on an update that fails re-applies the previous objects so the
old version keeps serving. A service nobody can schedule (an FPGA resource no node offers) is left
in place and reported: its spec matches, so the next plan does not replace it, and it starts by
itself when a node appears.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import yaml

from planner.errors import CancelledError
from planner.resources import FAILED, UNHEALTHY, UNSCHEDULABLE, Live, Resource

from ..base import (
    KindSchema,
    LocksItself,
    Preparation,
    Progress,
    ProjectContext,
    Provider,
    ProviderError,
    Reachable,
    Renders,
    Rules,
    Unreachable,
    as_events,
    ensure_connected,
    environment_variables,
)
from ..bundle import runtime_version
from ..images import ImageTarget
from . import canary, manifests, schema
from .access import Access
from .applying import Applying, RolloutFailed
from .client import Cluster, Forbidden
from .leader import LeaderLease
from .lease import LeaseLock
from .manifests import Placement
from .reading import LiveReading
from .traffic import TrafficSplitting

__all__ = ["DEFAULT_NAMESPACE", "KubernetesProvider", "RolloutFailed"]

DEFAULT_NAMESPACE = "default"


class KubernetesProvider(Access, LiveReading, Applying, TrafficSplitting, ImageTarget, Reachable, Renders,
                         LocksItself, Provider):
    kind: ClassVar[str] = "kubernetes"

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
        ensure_connected(self)
        assert self._cluster is not None
        return self._cluster

    @property
    def namespace(self) -> str:
        return str(self.config.get("namespace") or DEFAULT_NAMESPACE)

    def describe(self) -> str:
        return f"target {self.target!r} ({self.kind}, namespace {self.namespace})"

    # -- schema and spec ------------------------------------------------------------------------
    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(target=schema.target_schema(cls.kind), deploy=schema.deploy_schema())

    def prepare(self) -> Preparation:
        """The bundled runtime; deploy defaults filled in; the spec plus its image's content address, so a
        plan shows which image changes."""
        return Preparation(runtime=runtime_version(), deploy=schema.normalize, spec=self.with_image)

    def placement(self) -> Placement:
        return Placement()

    def rules(self, desired: Resource | None, live: Live | None) -> Rules:
        """Recreate Failed/Unhealthy instances; never Unschedulable ones (they would come back the same)."""
        return Rules(replace_on=frozenset({FAILED, UNHEALTHY}))

    def validate(self, desired: Sequence[Resource]) -> list[str]:
        """A shadow rollout (or a mirror phase) needs the target's Gateway API router; warns of canary steps
        a replica ratio runs coarser than asked and of extended resources no node offers."""
        warnings = []
        for service in desired:
            problem = self.rollout_problem(service)
            if problem:
                raise ProviderError(problem)
            warnings += self.rollout_warnings(service)
        return warnings + self.missing_resources(desired)

    def gateway(self) -> manifests.Gateway | None:
        """The Gateway whose HTTPRoutes serve this target's services (its namespace defaults to the target's)."""
        setting = self.config.get("gateway")
        if not setting:
            return None
        return manifests.Gateway(str(setting["name"]), str(setting.get("namespace") or self.namespace))

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
            pull_secret=self._pull_config(), placement=self.placement(), gateway=self.gateway())

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
        head = f"# image {svc.image} is pinned to its pushed digest (repository@sha256:...) at apply\n"
        text = head + self._dump(manifests.objects(svc), desired)
        first = canary.first_step(desired.inputs.get("rollout"), desired.spec["deploy"], routed=svc.gateway is not None)
        if first is not None:   # an update of a running service goes through these first
            note, replicas, weight, mirror = first
            text += (f"---\n# an update rolls out as a {note}: the candidate runs beside the stable version as "
                     f"{manifests.canary_name(svc.name)}, shown at its first step\n")
            text += self._dump(canary.objects(svc, replicas, weight=weight, mirror=mirror), desired)
        return text

    @staticmethod
    def _dump(objects: Sequence[Mapping[str, Any]], desired: Resource) -> str:
        docs = [_redact_env(manifests.redacted(o), desired.sensitive) for o in objects]
        return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)

    # -- live state -----------------------------------------------------------------------------
    def rbac(self) -> str:
        """The Role and ClusterRole this target needs (``mlops render --rbac``)."""
        from . import rbac
        return rbac.render(self.namespace)

    # -- plan -----------------------------------------------------------------------------------
    def missing_resources(self, desired: Sequence[Resource]) -> list[str]:
        """Extended resources (FPGA, GPU) that no node's allocatable offers: those pods would wait forever."""
        wanted: dict[str, list[str]] = {}
        for r in desired:
            for res in manifests.resources(r.spec["deploy"], self.placement())["limits"]:
                if "/" in res:
                    wanted.setdefault(res, []).append(r.address.name)
        if not wanted:
            return []
        ensure_connected(self)
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
    def create(self, desired: Resource, progress: Progress) -> Live:
        events = as_events(progress)
        ensure_connected(self)
        name = desired.address.name
        try:
            self._ensure_namespace()
            self._check_not_foreign(name)
            image = self._pushed_image(desired, events)
            svc = self._desired_service(desired, image, self._keys(desired))
            events.step(f"applying {len(manifests.objects(svc))} objects to {self.namespace} (server-side apply)")
            self._write_service(svc, events)
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
        ensure_connected(self)
        name = desired.address.name
        image = self._pushed_image(desired, events)
        svc = self._desired_service(desired, image, self._keys(desired))
        try:
            events.step(f"applying {len(manifests.objects(svc))} objects to {self.namespace} (server-side apply)")
            self._write_service(svc, events)
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
        self._remove_candidate(name)   # a plain update: what an interrupted rollout left goes too
        if live.rollout is not None:
            self._forget(name)
        return self._read_one(name)

    def delete(self, live: Live, progress: Progress) -> None:
        """Everything labelled as this service on this target; what it owns goes with it (ReplicaSets, pods)."""
        progress(f"deleting the objects of {live.address.name} in {self.namespace}")
        self._delete_service(live.address.name, live.target or self.target)


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
