"""The plan as data: a closed set of actions, changes holding full before/after values.

Field-level differences are derived (``Change.changed_paths``), never stored beside the values,
so that the text, JSON and markdown renderings cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .addresses import Address
from .errors import MlopsError
from .hashing import digest
from .resources import REPLACE_ON_BY_DEFAULT, Health

FORMAT_VERSION = "1.0"


class Action(StrEnum):
    NOOP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    DELETE_THEN_CREATE = "delete-then-create"   # -/+ replace, old goes first
    CREATE_THEN_DELETE = "create-then-delete"   # +/- replace, new is up before old goes
    DELETE = "delete"

    @property
    def is_replace(self) -> bool:
        return self in (Action.DELETE_THEN_CREATE, Action.CREATE_THEN_DELETE)

    @property
    def steps(self) -> list[str]:
        """Terraform's ``actions`` list: consumers scan it for ``delete`` to catch destruction."""
        return {
            Action.NOOP: ["no-op"],
            Action.CREATE: ["create"],
            Action.UPDATE: ["update"],
            Action.DELETE_THEN_CREATE: ["delete", "create"],
            Action.CREATE_THEN_DELETE: ["create", "delete"],
            Action.DELETE: ["delete"],
        }[self]

    @classmethod
    def from_steps(cls, steps: list[str]) -> Action:
        for action in cls:
            if action.steps == list(steps):
                return action
        raise MlopsError(f"unknown action list {steps!r} in plan file")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"deploy": {"port": 1}}`` -> ``{"deploy.port": 1}``; lists stay whole (they diff as one)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in sorted(value):
            path = f"{prefix}.{key}" if prefix else str(key)
            sub = value[key]
            if isinstance(sub, Mapping) and sub:
                out.update(flatten(sub, path))
            else:
                out[path] = sub
        return out
    return {prefix: value}


def changed_paths(before: Any, after: Any) -> list[str]:
    """Flattened attribute paths whose values differ (added, removed or changed), sorted.

    The one path diff: the planner's decision, the renderers and the git provenance all use it.
    """
    old = flatten(before) if isinstance(before, Mapping) else {"": before}
    new = flatten(after) if isinstance(after, Mapping) else {"": after}
    return sorted(p for p in set(old) | set(new) if old.get(p, _MISSING) != new.get(p, _MISSING))


@dataclass(frozen=True)
class Rules:
    """How one target changes one service; a provider answers them per instance (``Provider.rules``).

    - ``replace_paths``: spec paths (or path prefixes) that cannot change in place.
    - ``replace_on``: live states in which the instance is recreated even if its spec matches.
    - ``replace_order``: how a replacement runs (create-then-delete keeps serving).
    - ``broken_order``: how an instance in a ``replace_on`` state is replaced (delete first by default:
      a broken instance may hold what its replacement needs).
    - ``move_order``: how a move from another target runs, decided by the new target.
    - ``updates_restart``: an in-place update restarts the service (ACI restarts every container on a
      PUT), so callers briefly lose it — except when only ``restart_free_paths`` change (tags).
    """

    replace_paths: frozenset[str] = frozenset()
    replace_on: frozenset[str] = REPLACE_ON_BY_DEFAULT
    replace_order: Action = Action.CREATE_THEN_DELETE
    broken_order: Action = Action.DELETE_THEN_CREATE
    move_order: Action = Action.CREATE_THEN_DELETE
    updates_restart: bool = False
    restart_free_paths: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for order in (self.replace_order, self.broken_order, self.move_order):
            if not order.is_replace:
                raise ValueError(f"a replacement order must be create-then-delete or delete-then-create, not {order}")


@dataclass(frozen=True)
class Change:
    """What will happen to one resource and why.

    ``reason`` is for display only (Terraform's ``action_reason``) and never drives apply.
    ``live_fingerprint`` is what a saved plan checks again before acting on this resource.
    """

    address: Address
    action: Action
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    before_target: str | None = None
    after_target: str | None = None
    replace_paths: tuple[str, ...] = ()
    reason: str | None = None
    live_status: str | None = None
    live_message: str | None = None
    live_fingerprint: str | None = None
    desired_fingerprint: str | None = None
    depends_on: tuple[Address, ...] = ()
    sensitive: frozenset[str] = frozenset()
    live_health: Health | None = None
    """Counts (replicas, devices) when the target reports them; state and message are above."""
    rollout: Mapping[str, Any] | None = None
    """How an update reaches callers (``planner.rollout.spec.Rollout.to_json``); None: replace after the smoke test."""
    rollout_state: Mapping[str, Any] | None = None
    """Where a rollout already under way on the target stands (``RolloutState.to_json``): continued, aborted
    or held by this change; None when the target reports none."""

    def changed_paths(self) -> list[str]:
        """Attribute paths whose values differ between before and after, sorted."""
        return changed_paths(self.before or {}, self.after or {})

    def is_sensitive(self, path: str) -> bool:
        return path in self.sensitive

    def to_json(self) -> dict[str, Any]:
        out = self._json()
        if self.live_health is not None and self.live_health.has_counts:
            out["live_health"] = self.live_health.to_json()
        if self.rollout is not None:
            out["rollout"] = dict(self.rollout)
        if self.rollout_state is not None:
            out["rollout_state"] = dict(self.rollout_state)
        return out

    def _json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "type": self.address.kind,
            "name": self.address.name,
            "change": {
                "actions": self.action.steps,
                "before": _mask(self.before, self, self.after),
                "after": _mask(self.after, self, self.before, after=True),
                "before_target": self.before_target,
                "after_target": self.after_target,
                "replace_paths": list(self.replace_paths),
                "sensitive_paths": sorted(self.sensitive),
            },
            "action_reason": self.reason,
            "live_status": self.live_status,
            "live_message": self.live_message,
            "live_fingerprint": self.live_fingerprint,
            "desired_fingerprint": self.desired_fingerprint,
            "depends_on": [str(a) for a in self.depends_on],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        ch = data["change"]
        return cls(
            address=Address.parse(data["address"]),
            action=Action.from_steps(ch["actions"]),
            before=ch["before"],
            after=ch["after"],
            before_target=ch.get("before_target"),
            after_target=ch.get("after_target"),
            replace_paths=tuple(ch.get("replace_paths", ())),
            reason=data.get("action_reason"),
            live_status=data.get("live_status"),
            live_message=data.get("live_message"),
            live_fingerprint=data.get("live_fingerprint"),
            desired_fingerprint=data.get("desired_fingerprint"),
            depends_on=tuple(Address.parse(a) for a in data.get("depends_on", ())),
            sensitive=frozenset(ch.get("sensitive_paths", ())),
            live_health=Health.from_json(data["live_health"]) if data.get("live_health") else None,
            rollout=data.get("rollout"),
            rollout_state=data.get("rollout_state"),
        )


_MISSING = object()


def _mask(spec: Mapping[str, Any] | None, change: Change, other: Mapping[str, Any] | None = None,
          prefix: str = "", *, after: bool = False) -> Any:
    """Secrets are stored as salted digests already; mask them again so no plan file holds even those.

    A masked ``after`` value that differs from ``before`` reads ``(sensitive, changed)``, so that a
    plan loaded back from JSON still knows a secret changed without knowing either value.
    """
    if spec is None:
        return None
    compare = other is not None
    other = other or {}
    out: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            sub = other.get(key)
            out[key] = _mask(value, change, sub if isinstance(sub, Mapping) else ({} if compare else None), path,
                             after=after)
        elif change.is_sensitive(path) and value is not None:
            out[key] = "(sensitive, changed)" if after and compare and other.get(key) != value else "(sensitive)"
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Plan:
    """The ordered changes plus what they were made from (manifest, live state, git commit)."""

    changes: tuple[Change, ...]
    manifest: str
    project: str
    manifest_fingerprint: str
    live_fingerprint: str
    git: Mapping[str, Any] = field(default_factory=dict)
    targeted: tuple[str, ...] = ()
    destroy: bool = False
    tool_version: str = ""
    warnings: tuple[str, ...] = ()
    """What a target wants the reviewer to know (no node offers a device, health-only endpoints)."""

    @property
    def actionable(self) -> list[Change]:
        return [c for c in self.changes if c.action is not Action.NOOP]

    @property
    def has_changes(self) -> bool:
        return bool(self.actionable)

    def counts(self) -> dict[str, int]:
        """Terraform's arithmetic: a replacement counts once in add and once in destroy."""
        add = sum(1 for c in self.changes if c.action is Action.CREATE or c.action.is_replace)
        change = sum(1 for c in self.changes if c.action is Action.UPDATE)
        destroy = sum(1 for c in self.changes if c.action is Action.DELETE or c.action.is_replace)
        return {"add": add, "change": change, "destroy": destroy}

    def to_json(self) -> dict[str, Any]:
        out = self._json()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def _json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "manifest": self.manifest,
            "project": self.project,
            "manifest_fingerprint": self.manifest_fingerprint,
            "live_fingerprint": self.live_fingerprint,
            "git": dict(self.git),
            "targeted": list(self.targeted),
            "destroy": self.destroy,
            "summary": self.counts(),
            "resource_changes": [c.to_json() for c in self.changes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        version = str(data.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise MlopsError(
                f"plan file format {version!r} is not supported (this mlops reads {FORMAT_VERSION}); "
                "re-run `mlops plan -o FILE`"
            )
        return cls(
            changes=tuple(Change.from_json(c) for c in data["resource_changes"]),
            manifest=data["manifest"],
            project=data["project"],
            manifest_fingerprint=data["manifest_fingerprint"],
            live_fingerprint=data["live_fingerprint"],
            git=data.get("git", {}),
            targeted=tuple(data.get("targeted", ())),
            destroy=bool(data.get("destroy", False)),
            tool_version=data.get("tool_version", ""),
            warnings=tuple(str(w) for w in data.get("warnings", ())),
        )


def fingerprint_all(fingerprints: Mapping[str, str | None]) -> str:
    return digest(dict(sorted(fingerprints.items())))
