"""Dependency order of changes: models and environments before the services that use them;
a deletion after every change of the services that referred to what is deleted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .addresses import Address
from .errors import MlopsError
from .plan import Action, Change


def referenced(spec: Mapping[str, Any] | None) -> set[Address]:
    """Models and environment a service spec names (``ridge:2@abc``, ``sklearn@def``)."""
    if not spec:
        return set()
    refs = {Address("model", m.split(":", 1)[0]) for m in spec.get("models", [])}
    if spec.get("environment"):
        refs.add(Address("environment", str(spec["environment"]).split("@", 1)[0]))
    return refs


def edges(changes: Iterable[Change]) -> dict[Address, set[Address]]:
    """For each change, the addresses of changes that must finish before it starts."""
    changes = list(changes)
    by_address = {c.address: c for c in changes}
    waits: dict[Address, set[Address]] = {c.address: set() for c in changes}
    for c in changes:
        if c.action in (Action.NOOP, Action.DELETE):
            continue
        # Creating or updating: its dependencies must be in place first.
        waits[c.address].update(d for d in c.depends_on if d in by_address)
    for c in changes:
        if c.action is not Action.DELETE:
            continue
        # Deleting: everything that used it (before or after) must have moved off first.
        for other in changes:
            if other.address != c.address and c.address in referenced(other.before) | referenced(other.after):
                waits[c.address].add(other.address)
    return waits


def topological_layers(waits: Mapping[Address, set[Address]]) -> list[list[Address]]:
    """Kahn's algorithm in layers; raises on a cycle (which the planner must never produce)."""
    remaining = {a: set(w) for a, w in waits.items()}
    layers: list[list[Address]] = []
    while remaining:
        ready = sorted(a for a, w in remaining.items() if not w)
        if not ready:
            raise MlopsError(f"internal error: dependency cycle among {', '.join(map(str, sorted(remaining)))}")
        layers.append(ready)
        for a in ready:
            del remaining[a]
        for w in remaining.values():
            w.difference_update(ready)
    return layers
