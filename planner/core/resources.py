"""Desired and live resources: plain, normalised, JSON-like data with a content fingerprint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .addresses import Address
from .hashing import digest

# The seed's service states, plus the two states a registry entry can be in.
HEALTHY = "Healthy"
TRANSITIONING = "Transitioning"
UNHEALTHY = "Unhealthy"
UNSCHEDULABLE = "Unschedulable"
FAILED = "Failed"
REGISTERED = "Registered"
REPLACE_ON_BY_DEFAULT = frozenset({UNHEALTHY, FAILED})
"""States in which recreating an instance can help. Unschedulable is not one: a pod with no node
that fits would be recreated into the same state on every apply."""


@dataclass(frozen=True)
class Health:
    """A service's state in the seed's words, plus counts where a target has several instances.

    ``ready``/``desired``/``failed`` are replicas on Kubernetes, devices on IoT Edge (applied and
    reporting success / targeted / failing); a single-instance target leaves them unset.
    """

    state: str
    message: str = ""
    ready: int | None = None
    desired: int | None = None
    failed: int | None = None
    unit: str = "replicas"

    @property
    def has_counts(self) -> bool:
        return self.desired is not None

    def counts(self) -> str:
        """``3/5 replicas ready, 1 failed``, or "" for a single-instance target."""
        if not self.has_counts:
            return ""
        text = f"{self.ready or 0}/{self.desired} {self.unit} ready"
        return text + (f", {self.failed} failed" if self.failed else "")

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "ready": self.ready, "desired": self.desired,
                "failed": self.failed, "unit": self.unit}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Health:
        return cls(state=str(data["state"]), message=str(data.get("message") or ""), ready=data.get("ready"),
                   desired=data.get("desired"), failed=data.get("failed"), unit=str(data.get("unit") or "replicas"))


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """The digest of a spec alone: which version of a service is meant, wherever it runs."""
    return digest(dict(spec))


@dataclass(frozen=True)
class Version:
    """One version of a service that runs now, and how it is doing.

    Every kind runs one version per service today and reports it; a progressive rollout runs
    several at once (the old and the new, each with its share of the traffic) and reports each.
    """

    revision: str                 # the target's own name for it: an instance, a Deployment's uid, a deployment id
    spec_fingerprint: str         # ``spec_fingerprint()`` of the spec it runs
    traffic: float = 1.0          # its share of the requests, 0 to 1
    health: Health | None = None

    @classmethod
    def only(cls, spec: Mapping[str, Any], revision: object, health: Health | None = None) -> tuple[Version, ...]:
        """The versions of a service that runs exactly one: this one, with all the traffic."""
        return (cls(str(revision or ""), spec_fingerprint(spec), 1.0, health),)


ROLLOUT_PHASES = ("mirror", "canary", "paused", "aborted")
"""Where a rollout can stand: copying requests to the candidate, sharing them by weight, held for a
person (``on_failure: pause``), or rolled back (kept so the same candidate is not retried by
every apply until ``mlops rollout retry``)."""


@dataclass(frozen=True)
class RolloutState:
    """Where a progressive rollout of one service stands, as the target itself keeps it.

    Kept on the target (the local keeper's route file, Deployment annotations, a deployment's
    labels), never in a state file: a fresh runner's plan reads it back in ``Live.rollout`` and
    shows ``rollout step 2/3 (50%), analysis 7/7 passed``; the next apply continues from it.
    """

    candidate: str                # spec_fingerprint() of the version being rolled out
    stable: str                   # spec_fingerprint() of the version that served before it
    phase: str                    # one of ROLLOUT_PHASES
    step: int = -1                # index into policy["steps"]; -1 before the first step (mirror phase)
    weight: float = 0.0           # percent of requests the candidate answers now
    mirror: float = 0.0           # percent of requests copied to the candidate (its answers thrown away)
    passed: int = 0               # analysis intervals passed / judged since the rollout started
    judged: int = 0
    failed: int = 0               # failed intervals counting toward failure_limit (a resumed rollout keeps them)
    policy: Mapping[str, Any] = field(default_factory=dict)   # Rollout.to_json(): a resumed rollout runs the same steps
    reason: str = ""              # why it paused or was rolled back
    updated: float = 0.0          # time.time() of the last change (the step's hold counts from here)

    def __post_init__(self) -> None:
        if self.phase not in ROLLOUT_PHASES:
            raise ValueError(f"rollout phase {self.phase!r} is not one of {', '.join(ROLLOUT_PHASES)}")

    def to_json(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "stable": self.stable, "phase": self.phase, "step": self.step,
                "weight": self.weight, "mirror": self.mirror, "passed": self.passed, "judged": self.judged,
                "failed": self.failed, "policy": dict(self.policy), "reason": self.reason, "updated": self.updated}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutState:
        """Read back what ``to_json`` wrote (a target's annotation, a file); ValueError if it is not that."""
        try:
            return cls(candidate=str(data["candidate"]), stable=str(data["stable"]), phase=str(data["phase"]),
                       step=int(data.get("step", -1)), weight=float(data.get("weight", 0.0)),
                       mirror=float(data.get("mirror", 0.0)), passed=int(data.get("passed", 0)),
                       judged=int(data.get("judged", 0)), failed=int(data.get("failed", 0)),
                       policy=dict(data.get("policy") or {}),
                       reason=str(data.get("reason", "")), updated=float(data.get("updated", 0.0)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a rollout state: {exc}") from None


@dataclass(frozen=True)
class Resource:
    """One resource the manifest asks for.

    ``spec`` is what is shown and diffed; ``secrets`` holds values needed to apply that must
    never be serialised (the spec carries only their salted digests); ``inputs`` holds
    apply-time data that is not part of identity (absolute paths, the sample request).
    """

    address: Address
    spec: Mapping[str, Any]
    depends_on: tuple[Address, ...] = ()
    target: str | None = None
    sensitive: frozenset[str] = frozenset()
    secrets: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    inputs: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        return digest({"address": str(self.address), "target": self.target, "spec": self.spec})


@dataclass(frozen=True)
class Live:
    """One resource as it really is, read back from its registry or target.

    ``spec`` is its essence (the same keys a desired spec has, nothing server-set), so that an
    unchanged resource diffs to nothing. ``details`` holds what is shown by ``status`` (endpoint,
    pid, git commit, message) and never takes part in a diff. ``health`` carries counts (replicas,
    devices) where the target has them; its state is always ``status``. ``versions`` are the versions
    of the service that run now (one per service today, several during a progressive rollout).
    """

    address: Address
    spec: Mapping[str, Any]
    status: str
    target: str | None = None
    provider: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()
    health: Health | None = None
    versions: tuple[Version, ...] = ()
    strays: tuple[str, ...] = ()
    """Revisions an interrupted apply left running beside the current one: the next apply removes them."""
    rollout: RolloutState | None = None
    """A progressive rollout in progress (or paused, or rolled back) as the target keeps it; ``spec`` is
    then the stable version's and ``versions`` holds both, each with its traffic share."""

    def __post_init__(self) -> None:
        if self.health is not None and self.health.state != self.status:
            raise ValueError(f"{self.address}: health state {self.health.state!r} is not its status {self.status!r}")

    @property
    def condition(self) -> Health:
        """The health as one value: the provider's counts if it gave them, else state and message."""
        if self.health is not None:
            return self.health
        return Health(self.status, str(self.details.get("message") or ""))

    @property
    def fingerprint(self) -> str:
        """What it is, not how it is doing: a rollout that finishes does not change it.

        Whether the state forces a change is added by the planner (``diff.live_fingerprint``),
        which knows the target's rules.
        """
        return digest({"target": self.target, "spec": self.spec})
