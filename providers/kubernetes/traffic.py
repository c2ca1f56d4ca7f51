"""``SplitsTraffic`` on Kubernetes: a stable and a canary Deployment behind the one Service.

How the share is made (replica ratio, or a Gateway API HTTPRoute's weights and mirror) is in
``canary``. The rules every call keeps:

- **Grow before shrink.** Whatever gains replicas is scaled first and waited for (its pods Ready,
  pods that cannot start fail the call at once), then the route moves, then what loses replicas
  is scaled down and the state written. The stable version never shrinks before the candidate's
  share is ready, and waiting honours cancellation (``Events.check``).
- **State with the replicas.** The ``RolloutState`` annotation and the stable replica count are
  written in one server-side apply by the ``mlops-rollout`` field manager, so what the target says
  and what it runs never disagree for long; a call interrupted anywhere is finished by the same
  call repeated (every step is an idempotent apply).
- **Promote never drops capacity.** The candidate's objects are applied to the stable Deployment
  (its name, Service and keys stay): a rolling update (maxUnavailable 0) brings the stable
  Deployment to the candidate at full size while the canary still serves; only then does the route
  go back to the stable Service alone and the canary Deployment go away.
- **A failed promote puts the stable version back.** When the stable Deployment does not become
  the candidate (or the call is cancelled once it was rewritten), the stable version's objects and
  its replica count are applied again before the call fails, so the rollout stands where it stood;
  ``abort`` checks the same (a promote killed midway) and restores the stable version first. What
  that version is made of is kept on the stable Deployment from the rollout's start
  (``canary.STABLE``), not taken from the caller's reading, which may postdate the rewrite.
- **With autoscale** the HPA is set aside during the rollout (the replica count it had, at least
  ``min_replicas``, is what the two versions share) and comes back with promote or abort.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from planner.core.resources import RolloutState
from planner.errors import CancelledError, ProviderError
from planner.resources import Live, Resource

from ..base import SplitsTraffic, as_events, ensure_connected
from . import canary, manifests
from .applying import RolloutFailed
from .client import NotFound
from .manifests import canary_name
from .reading import _rollout_state

if TYPE_CHECKING:
    from ..base import Progress
    from .client import Cluster

SHADOW_NEEDS = "needs a Gateway API router on the target (gateway: {name, namespace}) to copy requests"


class TrafficSplitting(SplitsTraffic):
    """Mixin of the provider: the rollout capability."""

    cluster: Cluster
    namespace: str
    target: str
    config: dict[str, Any]

    if TYPE_CHECKING:
        def _desired_service(self, desired: Resource, image: str, keys: Mapping[str, str]) -> manifests.Service: ...
        def _live_service(self, live: Live) -> manifests.Service: ...
        def _pushed_image(self, desired: Resource, progress: Progress) -> str: ...
        def _keys(self, desired: Resource) -> dict[str, str]: ...
        def _wait_ready(self, name: str, limit: float, events: Any, deployment: str | None = None) -> int: ...
        def _wait_rollout(self, desired: Resource, events: Any) -> None: ...
        def _settle(self, name: str, deployment: str | None = None) -> None: ...
        def _apply_objects(self, objects: Any, events: Any) -> None: ...
        def _prune_parts(self, svc: manifests.Service) -> None: ...
        def _rollback(self, live: Live) -> None: ...
        def _read_one(self, name: str) -> Live: ...

    # -- what this target can run ---------------------------------------------------------------
    @classmethod
    def rollout_strategies(cls, config: Mapping[str, Any]) -> frozenset[str]:
        """Canary and blue-green everywhere (replica ratio); shadow only behind a router that mirrors."""
        if config.get("gateway"):
            return frozenset({"canary", "blue_green", "shadow"})
        return frozenset({"canary", "blue_green"})

    def rollout_problem(self, desired: Resource) -> str | None:
        """Why this target cannot run the service's rollout as declared (one line), or None."""
        policy = desired.inputs.get("rollout") or {}
        if self.config.get("gateway"):
            return None
        if policy.get("strategy") == "shadow" or policy.get("mirror"):
            what = "strategy shadow" if policy.get("strategy") == "shadow" else "a mirror phase"
            return (f"{desired.address}: rollout {what} {SHADOW_NEEDS}; target {self.target!r} has none "
                    "(a canary there splits by replica ratio)")
        return None

    def rollout_warnings(self, desired: Resource) -> list[str]:
        """Canary steps the replica ratio runs coarser than asked (no router here): said in the plan, so
        "10%" on one replica is never silently 50%."""
        if self._routed():
            return []
        policy = desired.inputs.get("rollout") or {}
        if policy.get("strategy") != "canary":
            return []
        deploy = desired.spec.get("deploy") or {}
        autoscale = deploy.get("autoscale")
        total = int(autoscale.get("min_replicas", 1)) if autoscale else int(deploy.get("replicas", 1))
        found = canary.coarse_steps(policy, total)
        if not found:
            return []
        runs = ", ".join(f"{weight:g}% runs as {share:.0f}% ({parts.canary} of {parts.canary + parts.stable} pods)"
                         for weight, share, parts in found)
        size = f"at min_replicas {total}" if autoscale else f"with replicas: {total}"
        return [f"{desired.address}: target {self.target!r} has no gateway, so a canary's share is its replica "
                f"ratio {size}: {runs}; add replicas or a gateway for exact weights"]

    # -- the capability -------------------------------------------------------------------------
    def start_candidate(self, desired: Resource, live: Live, state: RolloutState, events: Progress) -> Live:
        ev = as_events(events)
        ensure_connected(self)
        name = desired.address.name
        problem = self.rollout_problem(desired)
        if problem:
            raise ProviderError(problem)
        svc = self._desired_service(desired, self._pushed_image(desired, ev), self._keys(desired))
        stable = self.cluster.get("Deployment", name, self.namespace)
        existing = self._candidate(name)
        if existing is not None and canary.version_of(existing) != state.candidate:
            ev.step(f"removing the earlier candidate {canary.version_of(existing)[:12]}")
            self._remove_candidate(name)
        total = _kept_total(stable) or self._total(live, stable)
        split = canary.split(total, state.weight, state.mirror, routed=self._routed())
        ev.step(f"starting the candidate {state.candidate[:12]} as {canary_name(name)} "
                f"({split.canary} of {total} replicas)")
        self._apply_objects([o for o in manifests.objects(svc) if o["kind"] == "Secret"], ev)
        self._apply_objects(canary.objects(svc, split.canary, weight=state.weight, mirror=state.mirror), ev)
        record = canary.stable_record(live) if canary.live_version(live) == state.stable else None
        self._keep(name, state, total, max(split.stable, self._replicas(stable)), record=record)
        self._set_hpa_aside(name, live)   # only once the state says a rollout runs: abort brings it back
        if split.canary:
            self._wait_candidate(name, desired_limit(live, desired), ev)
        return self._read_one(name)

    def set_traffic(self, live: Live, state: RolloutState, events: Progress) -> Live:
        ev = as_events(events)
        ensure_connected(self)
        name = live.address.name
        stable = self.cluster.get("Deployment", name, self.namespace)
        candidate = self._candidate(name)
        if candidate is None:
            raise ProviderError(f"{live.address}: no candidate runs beside the stable version (start it first)")
        total = _kept_total(stable) or self._total(live, stable)
        split = canary.split(total, state.weight, state.mirror, routed=self._routed())
        stable_now, canary_now = self._replicas(stable), self._replicas(candidate)
        moves = (split.stable, split.canary) != (stable_now, canary_now)
        if moves or _kept_share(stable) != (state.weight, state.mirror):
            # Said when something moves; the driver also calls this after every analysis interval to keep
            # the counts, which moves nothing (it printed this line every 2 s for ten minutes).
            mirrored = f", {state.mirror:g}% mirrored" if state.mirror else ""
            ev.step(f"traffic {state.weight:g}% to the candidate{mirrored}: {split.canary} candidate and "
                    f"{split.stable} stable replicas")
        if split.canary > canary_now:
            self._scale(canary_name(name), split.canary)
        if split.stable > stable_now:
            self._keep(name, state, total, split.stable, state_too=False)
        if split.canary:
            self._wait_candidate(name, desired_limit(live, None), ev)
        if split.stable > stable_now:
            self._wait_ready(name, desired_limit(live, None), ev)
        if self._routed():
            svc = self._live_service(live)
            self._apply_objects([manifests.http_route(svc, canary_weight=round(state.weight),
                                                      mirror_percent=round(state.mirror))], ev)
        ev.check()
        if split.canary < canary_now:
            self._scale(canary_name(name), split.canary)
        self._keep(name, state, total, split.stable)
        return self._read_one(name)

    def promote(self, live: Live, desired: Resource, events: Progress) -> Live:
        ev = as_events(events)
        ensure_connected(self)
        name = desired.address.name
        stable = self.cluster.get("Deployment", name, self.namespace)
        shared = _kept_total(stable) or self._total(live, stable)
        deploy = desired.spec["deploy"]
        total = int(deploy["replicas"]) if "autoscale" not in deploy else \
            max(shared, int(deploy["autoscale"].get("min_replicas", 1)))
        svc = self._desired_service(desired, self._pushed_image(desired, ev), self._keys(desired))
        objects = manifests.objects(svc)
        ev.step(f"promoting: {name} rolls to the candidate at {total} replicas while the candidate serves")
        later = ("HTTPRoute", "HorizontalPodAutoscaler")
        try:
            self._apply_objects([o for o in objects if o["kind"] not in later], ev)
            self._scale(name, total, annotations=_annotations(stable))   # the HPA's count too, before it returns
            self._wait_rollout(desired, ev)
        except (ProviderError, CancelledError) as exc:   # RolloutFailed, the API refused, or cancelled
            cause = f"{exc.state}: {exc}" if isinstance(exc, RolloutFailed) else \
                "cancelled" if isinstance(exc, CancelledError) else str(exc)
            ev.step(f"promoting failed ({cause}); putting the stable version back on {name}")
            try:
                self._restore_stable(live, stable)
            except ProviderError as again:
                raise ProviderError(f"{desired.address}: promoting failed ({cause}) and putting the stable version "
                                    f"back failed too ({again}); see `mlops status`") from None
            if isinstance(exc, CancelledError):
                raise
            raise ProviderError(f"{desired.address}: promoting failed ({cause}); the stable version is back on "
                                f"{name} and the candidate keeps serving beside it, see `mlops status`") from None
        self._apply_objects([o for o in objects if o["kind"] in later], ev)
        self._remove_candidate(name)
        self._prune_parts(svc)
        self._scale(name, total)   # the rollout's state goes; its manager keeps only the count it set
        return self._read_one(name)

    def abort(self, live: Live, state: RolloutState, events: Progress) -> Live:
        """Not cancellable: this is where a cancelled rollout goes. Stable first, then the candidate goes."""
        ensure_connected(self)
        name = live.address.name
        stable = self.cluster.get("Deployment", name, self.namespace)
        total = _kept_total(stable) or self._total(live, stable)
        kept = dataclasses.replace(state, phase="aborted", weight=0.0, mirror=0.0, updated=time.time())
        back = live
        if canary.version_of(stable) != state.stable:   # a promote killed after it rewrote the stable Deployment
            back = self._stable_live(live, stable, state.stable)
            self._restore_stable(back, stable, replicas=total)
        self._keep(name, kept, total, total)
        self._settle(name)
        # The stable Deployment now runs the stable version: only what was set aside comes back (the HPA;
        # the route's whole share), never its Secrets (this machine may not hold the keys).
        svc = self._live_service(back)
        self._apply_objects([o for o in manifests.objects(svc) if o["kind"] in ("HorizontalPodAutoscaler",
                                                                                  "HTTPRoute")], None)
        self._remove_candidate(name)
        self._keep(name, kept, total, total)
        return self._read_one(name)

    def clear(self, live: Live, events: Progress) -> Live:
        ensure_connected(self)
        name = live.address.name
        if self._candidate(name) is not None:
            raise ProviderError(f"{live.address}: a candidate still runs beside the stable version; promote or "
                                "abort the rollout first")
        self._forget(name)
        return self._read_one(name)

    def _forget(self, name: str) -> None:
        """The rollout's annotations go; its field manager keeps only the replica count as it is."""
        stable = self.cluster.get("Deployment", name, self.namespace)
        self._scale(name, self._replicas(stable))

    # -- helpers --------------------------------------------------------------------------------
    def _routed(self) -> bool:
        return bool(self.config.get("gateway"))

    def _candidate(self, name: str) -> dict[str, Any] | None:
        try:
            return self.cluster.get("Deployment", canary_name(name), self.namespace)
        except NotFound:
            return None

    @staticmethod
    def _replicas(deployment: Mapping[str, Any]) -> int:
        return int((deployment.get("spec") or {}).get("replicas", 1))

    def _total(self, live: Live, stable: Mapping[str, Any]) -> int:
        """What the two versions share: the spec's replicas, or what the HPA runs (at least its minimum)."""
        deploy = live.spec.get("deploy") or {}
        if "autoscale" in deploy:
            return max(self._replicas(stable), int(deploy["autoscale"].get("min_replicas", 1)))
        return int(deploy.get("replicas", 1))

    def _set_hpa_aside(self, name: str, live: Live) -> None:
        if "autoscale" in (live.spec.get("deploy") or {}):
            self.cluster.delete("HorizontalPodAutoscaler", name, self.namespace)

    def _scale(self, deployment: str, replicas: int, annotations: Mapping[str, str] | None = None) -> None:
        self.cluster.apply(canary.scale("Deployment", deployment, self.namespace, replicas, annotations),
                           manager=canary.MANAGER)

    def _keep(self, name: str, state: RolloutState, total: int, stable_replicas: int, *,
              state_too: bool = True, record: str | None = None) -> None:
        """The stable Deployment's replicas and (``state_too``) the rollout state, in one apply; the stable
        version's record (``canary.STABLE``) is ``record`` when given, else the one it has."""
        current = _annotations(self.cluster.get("Deployment", name, self.namespace))
        if state_too:
            annotations = {**current, canary.ROLLOUT: json.dumps(state.to_json(), sort_keys=True,
                                                                 separators=(",", ":")), canary.TOTAL: str(total)}
        else:
            annotations = current or {canary.TOTAL: str(total)}
        if record is not None:
            annotations[canary.STABLE] = record
        self._scale(name, stable_replicas, annotations)

    def _stable_live(self, live: Live, stable: Mapping[str, Any], version: str) -> Live:
        """The stable ``version`` as a ``Live`` to rebuild its objects from: ``live`` when it describes that
        version, else the record the rollout's start kept on the stable Deployment."""
        if canary.live_version(live) == version:
            return live
        record = _annotations(stable).get(canary.STABLE)
        if record:
            back = canary.from_record(live, record)
            if canary.live_version(back) == version:
                return back
        runs = canary.version_of(stable)[:12] or "nothing"
        raise ProviderError(f"{live.address}: the stable Deployment runs {runs}, not the stable version "
                            f"{version[:12]}, and no record of that version is kept on it; "
                            "apply the stable version's manifest without a rollout block to put it back")

    def _restore_stable(self, live: Live, stable: Mapping[str, Any], replicas: int | None = None) -> None:
        """Put the stable version back on the stable Deployment (what a promote rewrote): its Deployment and
        Service, the replica count ``stable`` had (or ``replicas``) and the rollout's annotations, waited for
        (bounded). The HPA and the route stay as the rollout has them; Secrets stay (same keys)."""
        name = live.address.name
        state = _rollout_state(stable.get("metadata", {}).get("annotations") or {})
        back = self._stable_live(live, stable, state.stable) if state is not None else live
        objects = manifests.objects(self._live_service(back))
        self._apply_objects([o for o in objects if o["kind"] in ("Deployment", "Service")], None)
        self._scale(name, self._replicas(stable) if replicas is None else replicas, _annotations(stable))
        self._settle(name)

    def _wait_candidate(self, name: str, limit: float, events: Any) -> None:
        try:
            self._wait_ready(name, limit, events, canary_name(name))
        except RolloutFailed as exc:
            raise ProviderError(f"service.{name}: the candidate does not serve ({exc.state}: {exc}); see "
                                f"`mlops logs {name}`") from None
        except CancelledError:
            raise

    def _remove_candidate(self, name: str) -> None:
        self.cluster.delete("Deployment", canary_name(name), self.namespace)
        self.cluster.delete("Service", canary_name(name), self.namespace)


def _annotations(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The rollout's own annotations on the stable Deployment (what the rollout manager keeps)."""
    found = deployment.get("metadata", {}).get("annotations") or {}
    return {k: found[k] for k in (canary.ROLLOUT, canary.TOTAL, canary.STABLE) if k in found}


def _kept_share(deployment: Mapping[str, Any]) -> tuple[float, float] | None:
    """(weight, mirror) of the rollout state kept on the stable Deployment; None without a readable one."""
    text = (deployment.get("metadata", {}).get("annotations") or {}).get(canary.ROLLOUT)
    try:
        data = json.loads(text) if text else None
        return (float(data["weight"]), float(data["mirror"])) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _kept_total(deployment: Mapping[str, Any]) -> int:
    value = (deployment.get("metadata", {}).get("annotations") or {}).get(canary.TOTAL)
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def desired_limit(live: Live, desired: Resource | None) -> float:
    """How long a version may take to become ready: its progress deadline plus a margin."""
    deploy = (desired.spec if desired is not None else live.spec).get("deploy") or {}
    return float(deploy.get("progress_deadline_s", 600)) + 30
