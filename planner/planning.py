"""Desired vs live -> Plan. The only place that pairs the two and asks providers to decide."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from . import __version__
from .addresses import Address
from .diff import decide
from .errors import MlopsError
from .graph import edges
from .plan import Action, Change, Plan, fingerprint_all
from .project import Project
from .resources import Live, Resource
from .rollout.driver import splits
from .rollout.resume import held_warnings, plan_rollout
from .rollout.support import weight_warnings


def make_plan(
    project: Project,
    *,
    targets: Iterable[Address] = (),
    destroy: bool = False,
    desired: dict[Address, Resource] | None = None,
    live: dict[Address, Live] | None = None,
) -> Plan:
    desired = project.desired() if desired is None else desired
    if live is None:   # an address live on two targets fails here
        live = project.live(only=targets_needed(targets, desired, destroy))
    wanted = {} if destroy else desired
    changes: list[Change] = []
    for address in sorted(set(wanted) | set(live)):
        changes.append(_decide(project, wanted.get(address), live.get(address)))
    targets = tuple(targets)
    if targets:
        changes = _restrict(changes, targets)
    cannot_split = {name for name, provider in project.providers.items() if not splits(provider)}
    warnings: list[str] = [*getattr(project, "removed_target_problems", []), *held_warnings(changes),
                           *weight_warnings(changes, cannot_split)]
    for name, provider in sorted(project.providers.items()):
        mine = [r for r in wanted.values() if r.address.kind == "service" and r.target == name]
        if mine:
            warnings += [f"target {name!r}: {w}" for w in provider.plan_warnings(mine)]
    shown = project.manifest.references   # values from the environment print as ${NAME}
    return Plan(
        changes=tuple(shown.mask_change(c) for c in changes),
        manifest=project.manifest.display,
        project=project.manifest.project,
        manifest_fingerprint=fingerprint_all({str(a): r.fingerprint for a, r in desired.items()}),
        live_fingerprint=fingerprint_all({str(a): lv.fingerprint for a, lv in live.items()}),
        git=project.git(),
        targeted=tuple(str(t) for t in targets),
        destroy=destroy,
        tool_version=__version__,
        warnings=shown.texts(warnings),
    )


def targets_needed(targets: Iterable[Address], desired: Mapping[Address, Resource], destroy: bool) -> set[str] | None:
    """The targets a ``--target`` selection reads: its services' declared targets; None: all of them.

    Models and environments live in the registry, which is always read. A selected service that
    is not in the manifest (or a destroy) may be on any target, so every target is read then.
    """
    targets = tuple(targets)
    if not targets or destroy:
        return None
    needed: set[str] = set()
    for address in targets:
        if address.kind != "service":
            continue
        resource = desired.get(address)
        if resource is None or resource.target is None:
            return None
        needed.add(resource.target)
    return needed


def _decide(project: Project, desired: Resource | None, live: Live | None) -> Change:
    address = desired.address if desired else live.address  # type: ignore[union-attr]
    if address.kind != "service":
        return decide(desired, live)
    # The target a service is going to gives the rules of how it gets there; a leaving one of its delete.
    # The decision itself is the core's: providers answer narrow questions (validate, rules), never decide.
    provider = project.provider_for(desired.target) if desired else project.provider_for(live)  # type: ignore[arg-type]
    if desired is not None:
        provider.validate(desired)
    change = decide(desired, live, provider.rules(desired, live))
    if desired is not None and desired.inputs.get("rollout") and change.action is Action.UPDATE:
        change = dataclasses.replace(change, rollout=desired.inputs["rollout"])   # a new version of a running one
    return plan_rollout(change, desired, live)   # a rollout the target reports: continue, abort or hold it


def _restrict(changes: list[Change], targets: tuple[Address, ...]) -> list[Change]:
    """``--target``: the named resources plus what they need (Terraform includes dependencies)."""
    by_address = {c.address: c for c in changes}
    unknown = [t for t in targets if t not in by_address]
    if unknown:
        known = ", ".join(str(a) for a in sorted(by_address)) or "none"
        raise MlopsError(f"--target {unknown[0]}: no such resource in the manifest or live state (known: {known})")
    waits = edges(changes)
    keep: set[Address] = set()
    stack = list(targets)
    while stack:
        a = stack.pop()
        if a in keep:
            continue
        keep.add(a)
        stack.extend(waits.get(a, ()))
    return [c for c in changes if c.address in keep]
