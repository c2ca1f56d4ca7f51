"""Deciding what to do about one resource: a pure function of desired, live and the target's rules."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import MlopsError
from .hashing import digest
from .plan import Action, Change, Rules, changed_paths
from .resources import Live, Resource

DEFAULT_RULES = Rules()


def live_fingerprint(live: Live, rules: Rules = DEFAULT_RULES) -> str:
    """What a saved plan checks again: what runs, where, and whether its state forces a change.

    A Transitioning rollout that becomes Healthy keeps it; a Healthy service that fails does not. A
    progressive rollout counts by its candidate and whether it runs or is held (paused, aborted): one
    that moves on a step keeps the plan fresh, one that was rolled back or finished since does not.
    """
    facts: dict[str, object] = {"live": live.fingerprint, "forces_replacement": live.status in rules.replace_on}
    if live.rollout is not None:
        held = live.rollout.phase in ("paused", "aborted")
        facts["rollout"] = [live.rollout.candidate, live.rollout.phase if held else "running"]
    return digest(facts)


def decide(desired: Resource | None, live: Live | None, rules: Rules = DEFAULT_RULES) -> Change:
    """Create, update, replace, delete or no-op — the first rule that applies wins."""
    if desired is None and live is None:
        raise MlopsError("internal error: decide() needs a desired or a live resource")
    address = desired.address if desired else live.address  # type: ignore[union-attr]
    common = {
        "address": address,
        "before": dict(live.spec) if live else None,
        "after": dict(desired.spec) if desired else None,
        "before_target": live.target if live else None,
        "after_target": desired.target if desired else None,
        "live_status": live.status if live else None,
        "live_message": (live.details.get("message") or None) if live else None,
        "live_fingerprint": live_fingerprint(live, rules) if live else None,
        "desired_fingerprint": desired.fingerprint if desired else None,
        "depends_on": desired.depends_on if desired else (),
        "sensitive": (desired.sensitive if desired else frozenset()) | (live.sensitive if live else frozenset()),
        "live_health": live.health if live else None,
    }

    # Not in the manifest any more: it goes.
    if desired is None:
        return Change(action=Action.DELETE, reason="delete_because_no_resource_config", **common)

    # Nothing runs yet (or it was removed behind our back): make it.
    if live is None:
        return Change(action=Action.CREATE, **common)

    # Moving between targets cannot be done in place; the new target says in which order.
    if live.target != desired.target:
        return Change(action=rules.move_order, replace_paths=("target",),
                      reason="replace_because_target_changed", **common)

    # A broken instance is replaced even when its spec matches (Terraform's "tainted"), when the
    # target says recreating it can help.
    if live.status in rules.replace_on:
        return Change(action=rules.broken_order, reason=f"replace_because_{live.status.lower()}", **common)

    changed = changed_paths(live.spec, desired.spec)
    if not changed:
        # Instances an interrupted apply left running are work too: the next apply stops them.
        if live.strays:
            return Change(action=Action.UPDATE, reason="update_because_strays", **common)
        return Change(action=Action.NOOP, **common)

    # Some attributes cannot change in place on this target.
    forcing = tuple(p for p in changed if _matches(p, rules.replace_paths))
    if forcing:
        return Change(action=rules.replace_order, replace_paths=forcing, reason="replace_because_cannot_update",
                      **common)

    if rules.updates_restart and any(not _matches(p, rules.restart_free_paths) for p in changed):
        return Change(action=Action.UPDATE, reason="update_restarts_service", **common)
    return Change(action=Action.UPDATE, **common)


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in patterns)
