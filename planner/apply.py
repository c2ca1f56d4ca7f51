"""Carrying out a plan: dependency order, independent changes in parallel, failures contained.

A failed change does not stop the others; only the changes that depend on it are skipped.
Cancellation (Ctrl-C, SIGTERM) starts nothing new and makes every running change stop at its
next wait; providers clean up what they had started. Nothing is recorded here: the next plan
reads live state again and shows exactly what is left.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from .checks import ProviderBug, check_returned
from .core.addresses import Address
from .core.diff import live_fingerprint
from .core.errors import CancelledError, MlopsError, StalePlanError
from .core.events import Events
from .core.plan import Action, Change, Plan, Rules
from .core.resources import Live, Resource
from .graph import edges
from .project import Project
from .rollout import driver
from .rollout.bake import RolloutFailed, bake, rollout_result

__all__ = ["Outcome", "ProviderBug", "apply_plan", "check_fresh", "check_returned", "live_after"]   # checks re-exported

Notify = Callable[[Change, str], None]
"""Progress callback: (change, event) where event is "start", a step text, or "done"/"failed"."""


@dataclass(frozen=True)
class Outcome:
    change: Change
    ok: bool
    elapsed: float
    error: str | None = None
    skipped: bool = False
    cancelled: bool = False
    live: Live | None = None      # what a service's create/update answered (checked against the request)
    rollout: str | None = None
    """A rollout that failed: "rolled_back", "paused" or "rollback_failed" (the CLI's exit codes)."""


def live_after(before: Mapping[Address, Live], outcomes: list[Outcome]) -> dict[Address, Live]:
    """Live state after an apply where every change succeeded, without reading it again: what was read
    before, each created or updated service as its provider answered, each deleted one gone."""
    after = dict(before)
    for outcome in outcomes:
        address = outcome.change.address
        if outcome.live is not None:
            after[address] = outcome.live
        elif outcome.ok and outcome.change.action is Action.DELETE:
            after.pop(address, None)
    return after


RulesFor = Callable[[Resource | None, Live | None], Rules]


def check_fresh(plan: Plan, desired: Mapping[Address, Resource], live: Mapping[Address, Live],
                rules_for: RulesFor = lambda desired, live: Rules()) -> None:
    """A saved plan still applies only if what it touches is as it was when planned.

    Staleness is per resource and follows what the plan decided on (spec, target, and whether the
    live state forces a change), so a rollout that finished since does not make it stale.
    """
    problems = []
    for change in plan.actionable:
        now = live.get(change.address)
        now_fp = live_fingerprint(now, rules_for(desired.get(change.address), now)) if now else None
        if now_fp != change.live_fingerprint:
            what = "was removed" if now is None else ("now exists" if change.live_fingerprint is None else "changed")
            problems.append(f"{change.address} {what} since the plan was made")
        if not plan.destroy and change.action is not Action.DELETE:
            want = desired.get(change.address)
            if want is None or want.fingerprint != change.desired_fingerprint:
                problems.append(f"{change.address}: the manifest or its files changed since the plan was made")
        elif not plan.destroy and change.address in desired:
            problems.append(f"{change.address} is back in the manifest since the plan was made")
    if problems:
        raise StalePlanError(
            "Saved plan is stale: " + "; ".join(problems) + ". Run `mlops plan -o FILE` again and apply the new plan."
        )


def apply_plan(
    project: Project,
    plan: Plan,
    desired: Mapping[Address, Resource],
    live: Mapping[Address, Live],
    *,
    parallelism: int = 4,
    notify: Notify = lambda change, event: None,
    cancel: threading.Event | None = None,
    wait_rollouts: bool = True,
) -> list[Outcome]:
    """``wait_rollouts`` False (``--no-wait``): a rollout on a target that splits traffic is started (or moved on)
    and left where it stands for a later apply to continue."""
    cancel = cancel or threading.Event()
    changes = {c.address: c for c in plan.actionable}
    waits = edges(changes.values())
    dependents: dict[Address, set[Address]] = {a: set() for a in changes}
    for a, ws in waits.items():
        for w in ws:
            dependents[w].add(a)
    pending = {a: set(w) for a, w in waits.items()}
    ready = [a for a, w in pending.items() if not w]   # a heap: the smallest ready address starts first
    heapq.heapify(ready)
    outcomes: dict[Address, Outcome] = {}
    running: dict[Future[Outcome], Address] = {}
    limit = max(1, parallelism)

    def skip_dependents(failed: Address) -> None:
        stack = [failed]
        while stack:
            cause = stack.pop()
            for d in sorted(dependents[cause], reverse=True):
                if d in outcomes or d not in pending:
                    continue
                pending.pop(d)
                outcomes[d] = Outcome(changes[d], ok=False, elapsed=0.0, skipped=True,
                                      error=f"skipped because {cause} failed")
                notify(changes[d], "skipped")
                stack.append(d)

    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="apply") as pool:
        while pending or running:
            if cancel.is_set():
                for a in sorted(pending):
                    outcomes[a] = Outcome(changes[a], ok=False, elapsed=0.0, skipped=True, cancelled=True,
                                          error="not started: the apply was cancelled")
                pending.clear()
                ready.clear()
            while ready and len(running) < limit:
                a = heapq.heappop(ready)
                if a not in pending:      # skipped meanwhile
                    continue
                del pending[a]
                running[pool.submit(_run, project, changes[a], desired, live, notify, cancel,
                                     wait_rollouts)] = a
            if not running:
                break
            done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                a = running.pop(fut)
                outcome = fut.result()
                outcomes[a] = outcome
                if outcome.ok:
                    for d in dependents[a]:
                        if d in pending:
                            pending[d].discard(a)
                            if not pending[d]:
                                heapq.heappush(ready, d)
                else:
                    skip_dependents(a)
    done = [outcomes[a] for a in sorted(outcomes)]
    project.remember_targets(live_after(live, done))   # so removing a target later plans its services' deletion
    return done


def _run(project: Project, change: Change, desired: Mapping[Address, Resource],
         live: Mapping[Address, Live], notify: Notify, cancel: threading.Event,
         wait_rollouts: bool = True) -> Outcome:
    started = time.monotonic()
    notify(change, "start")
    events = Events(lambda step: notify(change, step), cancel)
    try:
        events.check()
        answered = _execute(project, change, desired.get(change.address), live.get(change.address), events,
                            wait_rollouts)
    except CancelledError:
        notify(change, "cancelled")
        return Outcome(change, ok=False, elapsed=time.monotonic() - started, cancelled=True,
                       error="cancelled while in progress; `mlops plan` shows what is left")
    except RolloutFailed as exc:
        notify(change, "failed")
        return Outcome(change, ok=False, elapsed=time.monotonic() - started, error=str(exc),
                       rollout=rollout_result(exc))
    except MlopsError as exc:
        notify(change, "failed")
        return Outcome(change, ok=False, elapsed=time.monotonic() - started, error=str(exc))
    except Exception as exc:  # a provider bug: contain it, report it plainly
        notify(change, "failed")
        return Outcome(change, ok=False, elapsed=time.monotonic() - started,
                       error=f"unexpected {type(exc).__name__}: {exc}")
    notify(change, "done")
    return Outcome(change, ok=True, elapsed=time.monotonic() - started, live=answered)


def _execute(project: Project, change: Change, desired: Resource | None, live: Live | None,
             progress: Events, wait_rollouts: bool = True) -> Live | None:
    """Carry out one change; a service's create or update answers its new Live."""
    kind, action = change.address.kind, change.action
    if kind in ("model", "environment"):
        store = project.store
        if action is Action.DELETE:
            (store.delete_model if kind == "model" else store.delete_environment)(change.address.name)
        else:
            progress("registering" if kind == "model" else "recording spec")
            if kind == "model":
                store.apply_model(_need(desired, change), progress)
            else:
                store.apply_environment(_need(desired, change))
        return None
    if desired is not None and action is not Action.DELETE:
        project.store.fetch_models(desired.inputs.get("models") or {})   # model files come from the registry
    # Services: the old and the new side may live on different targets.
    old = project.provider_for(live) if live else None
    new = project.provider_for(desired.target) if desired and desired.target else None
    for provider in (old, new):
        if provider is not None:
            provider.ensure_connected()
    answered = None
    if action is Action.CREATE:
        answered = _create(new, change, desired, progress)
    elif action is Action.UPDATE:
        if live is None:
            answered = _create(new, change, desired, progress)
        else:
            want = _need(desired, change)
            if driver.drives(change, live, new):   # two versions side by side, step by step
                return driver.update(change, want, live, new, progress, wait=wait_rollouts)
            answered = check_returned(new, "update", want,
                                      _need_provider(new, change).update(want, live, progress))
            if change.rollout and wait_rollouts:   # watch the new version; put the old one back if it fails
                bake(project, change, want, live, answered, new, progress)
    elif action is Action.CREATE_THEN_DELETE:
        answered = _create(new, change, desired, progress)
        if live:
            progress("removing the previous instance")
            _need_provider(old, change).delete(live, progress)
    elif action is Action.DELETE_THEN_CREATE:
        if live:
            _need_provider(old, change).delete(live, progress)
        answered = _create(new, change, desired, progress)
    elif action is Action.DELETE and live:
        _need_provider(old, change).delete(live, progress)
    if action is Action.DELETE:
        project.keys.forget(change.address.name)   # the service left the project: so do its keys
    return answered


def _create(provider, change: Change, desired: Resource | None, progress: Events) -> Live:
    want = _need(desired, change)
    return check_returned(provider, "create", want, _need_provider(provider, change).create(want, progress))


def _need(desired: Resource | None, change: Change) -> Resource:
    if desired is None:
        raise MlopsError(f"{change.address}: not in the manifest any more; run `mlops plan` again")
    return desired


def _need_provider(provider, change: Change):
    if provider is None:
        raise MlopsError(f"{change.address}: no provider for its target; check the manifest's targets")
    return provider
