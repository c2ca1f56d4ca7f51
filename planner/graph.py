"""Dependency order of changes: models and environments before the services that use them;
a deletion after every change of the services that referred to what is deleted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .addresses import Address
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
    """For each change, the addresses of changes that must finish before it starts.

    Linear in the number of changes: the references of every change are indexed once, so a
    destroy of 10,000 services does not compare every deletion with every change.
    """
    changes = list(changes)
    by_address = {c.address: c for c in changes}
    waits: dict[Address, set[Address]] = {c.address: set() for c in changes}
    users: dict[Address, set[Address]] = {}
    for c in changes:
        if c.action not in (Action.NOOP, Action.DELETE):
            # Creating or updating: its dependencies must be in place first.
            waits[c.address].update(d for d in c.depends_on if d in by_address)
        for ref in referenced(c.before) | referenced(c.after):
            users.setdefault(ref, set()).add(c.address)
    for c in changes:
        if c.action is Action.DELETE:
            # Deleting: everything that used it (before or after) must have moved off first.
            waits[c.address].update(users.get(c.address, set()) - {c.address})
    return waits
