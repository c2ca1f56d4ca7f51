"""The plan as Terraform-style text. A pure function of the plan: no I/O, no clock, no env."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .plan import Action, Change, Plan, changed_paths, flatten
from .rollout.resume import rollout_line as resume_line
from .rollout.resume import shows_rollout

SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE: "-",
    Action.DELETE_THEN_CREATE: "-/+",
    Action.CREATE_THEN_DELETE: "+/-",
}
LEGEND = {
    Action.CREATE: "  + create",
    Action.UPDATE: "  ~ update in-place",
    Action.DELETE: "  - destroy",
    Action.DELETE_THEN_CREATE: "-/+ destroy and then create replacement",
    Action.CREATE_THEN_DELETE: "+/- create replacement and then destroy",
}
SENSITIVE = "(sensitive)"


def render_plan(plan: Plan) -> str:
    lines: list[str] = []
    if plan.targeted:
        lines += [
            "Warning: resource targeting is in effect (" + ", ".join(plan.targeted) + ").",
            "The plan covers only these resources and what they depend on; run `mlops plan` without",
            "--target to see everything.",
            "",
        ]
    actionable = plan.actionable
    if not actionable:
        lines += [f"Warning: {w}" for w in plan.warnings]
        lines.append("No changes. No objects need to be destroyed." if plan.destroy
                     else "No changes. Your deployment matches the manifest.")
        return "\n".join(lines) + "\n"
    lines.append("mlops used the manifest and the live state of every target to make this plan.")
    lines.append("Resource actions are indicated with the following symbols:")
    present = {c.action for c in actionable}
    lines += [LEGEND[a] for a in LEGEND if a in present]
    lines += ["", "mlops will perform the following actions:", ""]
    for change in actionable:
        lines += render_change(change)
        lines.append("")
    lines += [f"Warning: {w}" for w in plan.warnings]
    if plan.warnings:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def summary_line(plan: Plan) -> str:
    n = plan.counts()
    return f"Plan: {n['add']} to add, {n['change']} to change, {n['destroy']} to destroy."


def headline(change: Change) -> list[str]:
    """``# <address> will be ...`` plus, where it helps, why."""
    a = change.address
    head = {
        Action.CREATE: f"# {a} will be created",
        Action.UPDATE: f"# {a} will be updated in-place",
        Action.DELETE: f"# {a} will be destroyed",
        Action.DELETE_THEN_CREATE: f"# {a} must be replaced",
        Action.CREATE_THEN_DELETE: f"# {a} must be replaced",
    }[change.action]
    out = [head]
    reason = change.reason or ""
    if reason == "delete_because_no_resource_config":
        out.append(f"# (because {a} is not in the manifest)")
    elif reason.startswith("update_because_") and change.live_message:
        out.append(f"# (because {change.live_message})")
    elif reason == "update_restarts_service":
        out.append("# (the target restarts it to update it: callers briefly lose it)")
    elif reason == "replace_because_target_changed":
        out.append(f"# (because its target changes from {change.before_target} to {change.after_target})")
    elif reason.startswith("replace_because_") and change.live_status and reason != "replace_because_cannot_update":
        counts = change.live_health.counts() if change.live_health else ""
        detail = (f", {counts}" if counts else "") + (f": {change.live_message}" if change.live_message else "")
        out.append(f"# (because its live status is {change.live_status}{detail})")
    if shows_rollout(change):
        out.append(f"# ({rollout_line(change)})")
    return out


def rollout_line(change: Change) -> str:
    """``rollout canary 10% (2m) -> 50% (5m) -> 100%, analysis every 30s``, or where a rollout under way
    stands and what apply does about it (one line, for every renderer)."""
    return resume_line(change)


def render_change(change: Change) -> list[str]:
    symbol = SYMBOLS[change.action]
    kind, name = change.address.kind, change.address.name
    out = [f"  {line}" for line in headline(change)]
    out.append(f"{symbol:>3} {kind} \"{name}\" {{")
    before, after = _display(change.before, change.before_target), _display(change.after, change.after_target)
    paths = sorted(set(before) | set(after))
    shown = paths if change.action in (Action.CREATE, Action.DELETE) else changed_paths(before, after)
    width = max((len(p) for p in shown), default=0)
    hidden = 0
    forcing = set(change.replace_paths)
    for path in paths:
        old, new = before.get(path, _ABSENT), after.get(path, _ABSENT)
        secret = change.is_sensitive(path)
        if change.action is Action.CREATE:
            out.append(f"      + {path:<{width}} = {_value(new, secret)}")
        elif change.action is Action.DELETE:
            out.append(f"      - {path:<{width}} = {_value(old, secret)}")
        elif old == new:
            hidden += 1
        elif old is _ABSENT:
            out.append(f"      + {path:<{width}} = {_value(new, secret)}{_forces(path, forcing)}")
        elif new is _ABSENT:
            out.append(f"      - {path:<{width}} = {_value(old, secret)}{_forces(path, forcing)}")
        else:
            out.append(f"      ~ {path:<{width}} = {_value(old, secret)} -> {_value(new, secret)}"
                       f"{_forces(path, forcing)}")
    if hidden:
        out.append(f"        # ({hidden} unchanged attribute{'s' if hidden != 1 else ''} hidden)")
    out.append("    }")
    return out


_ABSENT = object()


def _display(spec: Mapping[str, Any] | None, target: str | None) -> dict[str, Any]:
    if spec is None:
        return {}
    flat = flatten(spec)
    if target is not None:
        flat["target"] = target
    return flat


def _forces(path: str, forcing: set[str]) -> str:
    return " # forces replacement" if path in forcing else ""


def _value(value: Any, secret: bool) -> str:
    if secret:
        return SENSITIVE
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
