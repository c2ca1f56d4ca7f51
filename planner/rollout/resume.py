"""What a plan makes of a rollout the target reports (``Live.rollout``): continue, abort, or hold it.

Pure functions of the change, the desired resource and the live one; no I/O. The decision itself
stays ``core.diff.decide``'s; here an update (or a no-op) of a service with a rollout on its target
is told which of these it is, so apply and every renderer agree:

- ``rollout_continue``: the candidate is the manifest's version and runs: apply continues from the
  recorded step (``continue rollout step 2/3 (50%), analysis 7/7 passed``);
- ``rollout_abort``: the manifest asks for the stable version again: apply aborts the candidate;
- ``rollout_superseded``: the manifest asks for a third version: apply aborts the candidate, then rolls
  the new one out;
- ``rollout_aborted`` / ``rollout_paused``: the manifest's version was rolled back, or is paused: apply
  leaves it alone (exit 5 / 6) until ``mlops rollout retry|promote|abort``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from planner.core.plan import Action, Change
from planner.core.resources import Live, Resource, RolloutState, spec_fingerprint

from .spec import Rollout, kept

RUNNING = ("mirror", "canary")
HELD = ("paused", "aborted")
REASONS = ("rollout_continue", "rollout_abort", "rollout_superseded", "rollout_aborted", "rollout_paused")


def position(state: RolloutState) -> str:
    """``step 2/3 (50%), analysis 7/7 passed``; ``mirror phase (20% copied)`` before the first step."""
    policy = kept(state.policy)
    steps = len(policy.steps) if policy else 0
    if state.step < 0:
        where = f"mirror phase ({state.mirror:g}% copied)" if state.mirror else "start (0%)"
    else:
        where = f"step {state.step + 1}/{steps} ({state.weight:g}%)" if steps else f"{state.weight:g}%"
    if policy is not None and policy.analysis is not None:
        where += f", analysis {state.passed}/{state.judged} passed"
        if state.failed:
            where += f", {state.failed}/{policy.analysis.failure_limit} failed"
    return where


def plan_rollout(change: Change, desired: Resource | None, live: Live | None) -> Change:
    """``change`` told what to do about the rollout ``live`` reports (see the module doc); unchanged without one."""
    state = live.rollout if live is not None else None
    if state is None or desired is None or live is None or live.target != desired.target:
        return change
    if change.action not in (Action.UPDATE, Action.NOOP):
        return change
    want = spec_fingerprint(desired.spec)
    kept = dict(state.to_json())
    if state.phase == "aborted":
        if want != state.candidate:
            return change          # a new version (or the stable one, which serves): nothing held
        return dataclasses.replace(change, action=Action.UPDATE, reason="rollout_aborted", rollout_state=kept)
    if want == state.stable:
        return dataclasses.replace(change, action=Action.UPDATE, reason="rollout_abort", rollout=None,
                                   rollout_state=kept)
    if want != state.candidate:
        return dataclasses.replace(change, action=Action.UPDATE, reason="rollout_superseded", rollout_state=kept)
    if state.phase == "paused":
        return dataclasses.replace(change, action=Action.UPDATE, reason="rollout_paused", rollout_state=kept)
    return dataclasses.replace(change, action=Action.UPDATE, reason="rollout_continue",
                               rollout=dict(state.policy) or change.rollout, rollout_state=kept)


def state_of(change: Change) -> RolloutState | None:
    return RolloutState.from_json(change.rollout_state) if change.rollout_state else None


def rollout_line(change: Change) -> str:
    """One line for every renderer: the policy of a new rollout, or what happens to the one under way."""
    state = state_of(change)
    name = change.address.name
    fresh = describe_policy(change.rollout)
    if state is None or change.reason not in REASONS:
        return fresh
    where = position(state)
    if change.reason == "rollout_continue":
        return f"continue rollout {where}"
    if change.reason == "rollout_abort":
        return f"abort the rollout of {state.candidate[:12]} at {where}: the manifest asks for the stable version"
    if change.reason == "rollout_superseded":
        then = f", then {fresh}" if fresh else ", then update in place"
        return f"abort the rollout of {state.candidate[:12]} at {where}{then}"
    if change.reason == "rollout_aborted":
        return (f"rolled back earlier ({state.reason or 'no reason kept'}); not retried: "
                f"`mlops rollout retry {name}` runs it again")
    return (f"rollout paused at {where} ({state.reason or 'no reason kept'}): "
            f"`mlops rollout promote|abort|retry {name}` decides")


def describe_policy(policy: Mapping[str, Any] | None) -> str:
    from .spec import describe

    return describe(Rollout.from_json(policy)) if policy else ""


def held_warnings(changes: Sequence[Change]) -> list[str]:
    """Plan warnings for rollouts apply will not move: rolled back earlier, or paused for a person."""
    return [f"{c.address}: {rollout_line(c)}" for c in changes if c.reason in ("rollout_aborted", "rollout_paused")]


def shows_rollout(change: Change) -> bool:
    """Whether renderers add a rollout line for this change."""
    return bool(change.rollout) or (change.rollout_state is not None and change.reason in REASONS)


def risk_kind(change: Change) -> str | None:
    """How a change reaches callers for the PR comment's risk line: its strategy, ``continued canary``,
    ``abort``, or ``held`` (rolled back or paused: apply leaves it alone); None without a rollout."""
    if not shows_rollout(change):
        return None
    strategy = str((change.rollout or {}).get("strategy") or "")
    if change.reason in ("rollout_aborted", "rollout_paused"):
        return "held (apply leaves it)"
    if change.reason == "rollout_abort":
        return "abort"
    if change.reason == "rollout_continue":
        return f"continued {strategy}"
    return strategy or "abort"
