"""A service's state from its Deployment, ReplicaSets, pods and events: ``kubectl rollout status``'s rules.

Rollout (kubectl's ``DeploymentStatusViewer``): generation > observedGeneration -> wait;
Progressing=ProgressDeadlineExceeded -> failed; updated < desired, replicas > updated or
available < updated -> wait; else done. Pods of the new ReplicaSet then say why a rollout waits:
PodScheduled=False/Unschedulable (with the scheduler's FailedScheduling message), image errors,
CrashLoopBackOff (with the last log lines), or readiness failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.resources import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, UNSCHEDULABLE, Health

IMAGE_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                          "CreateContainerConfigError", "CreateContainerError"})
SCHEDULING_REASONS = frozenset({"Unschedulable", "SchedulingGated", "SchedulerError"})
REVISION = "deployment.kubernetes.io/revision"


@dataclass(frozen=True)
class Rollout:
    done: bool
    failed: str | None        # ProgressDeadlineExceeded's message
    waiting: str              # what it waits for, kubectl's words


def rollout(deployment: Mapping[str, Any]) -> Rollout:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    if generation > int(status.get("observedGeneration") or 0):
        return Rollout(False, None, "the rollout to be observed")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Rollout(False, cond.get("message") or "progress deadline exceeded", "")
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < desired:
        return Rollout(False, None, f"{updated} of {desired} new replicas updated")
    if replicas > updated:
        return Rollout(False, None, f"{replicas - updated} old replicas pending termination")
    if available < updated:
        return Rollout(False, None, f"{available} of {updated} updated replicas available")
    return Rollout(True, None, "")


def new_replica_set(deployment: Mapping[str, Any],
                    replica_sets: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The ReplicaSet of the Deployment's current revision (owned by it, highest revision)."""
    uid = deployment["metadata"].get("uid")
    revision = str((deployment["metadata"].get("annotations") or {}).get(REVISION, ""))
    mine = [rs for rs in replica_sets if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or [])]
    exact = [rs for rs in mine if str((rs["metadata"].get("annotations") or {}).get(REVISION, "")) == revision]
    pool = exact or mine
    if not pool:
        return None
    return max(pool, key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION) or 0))


def owned_pods(owner: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if owner is None:
        return []
    uid = owner["metadata"].get("uid")
    return [p for p in pods if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]


@dataclass
class PodProblem:
    state: str
    pod: str
    message: str
    wants_logs: bool = False


def pod_problem(pod: Mapping[str, Any], events: Mapping[str, str]) -> PodProblem | None:
    """Why one pod does not serve, or None (still starting, or fine)."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return PodProblem(FAILED, name, status.get("message") or status.get("reason") or "pod failed", True)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") in SCHEDULING_REASONS:
            message = events.get(name) or cond.get("message") or cond.get("reason")
            return PodProblem(UNSCHEDULABLE, name, message)
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in IMAGE_ERRORS:
            return PodProblem(FAILED, name, f"{reason}: {waiting.get('message') or ''}".rstrip(": "))
        last = (cs.get("lastState") or {}).get("terminated") or {}
        restarts = int(cs.get("restartCount") or 0)
        if reason == "CrashLoopBackOff" or (restarts and not cs.get("ready")):
            detail = f"exit code {last.get('exitCode')}" + (f" ({last['reason']})" if last.get("reason") else "")
            return PodProblem(UNHEALTHY, name, f"{reason or 'restarting'}, {restarts} restarts, {detail}", True)
    return None


def ready_count(pods: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for p in pods if _ready(p))


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


@dataclass
class Assessment:
    health: Health
    problem: PodProblem | None = None
    rollout: Rollout = field(default_factory=lambda: Rollout(False, None, ""))


def assess(deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]],
           pods: Sequence[Mapping[str, Any]], events: Mapping[str, str]) -> Assessment:
    """The seed's state with ready/desired counts (ready: pods of the current revision that are Ready)."""
    desired = int((deployment.get("spec") or {}).get("replicas", 1))
    current = owned_pods(new_replica_set(deployment, replica_sets), pods)
    ready = ready_count(current)
    state = rollout(deployment)
    problems = [p for p in (pod_problem(pod, events) for pod in current) if p is not None]
    failed = sum(1 for p in problems if p.state in (FAILED, UNHEALTHY)) or None
    if state.failed:
        image = next((p for p in problems if p.state == FAILED), None)
        message = state.failed + (f"; {image.pod}: {image.message}" if image else "")
        return Assessment(Health(FAILED, message, ready, desired, failed), image, state)
    if state.done:
        return Assessment(Health(HEALTHY, "", ready, desired, failed), None, state)
    order = {FAILED: 0, UNHEALTHY: 1, UNSCHEDULABLE: 2}
    if problems:
        worst = min(problems, key=lambda p: order[p.state])
        return Assessment(Health(worst.state, f"{worst.pod}: {worst.message}", ready, desired, failed), worst, state)
    return Assessment(Health(TRANSITIONING, f"waiting for {state.waiting}", ready, desired, failed), None, state)
