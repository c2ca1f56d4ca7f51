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
SERVICE_STATES = (TRANSITIONING, HEALTHY, UNHEALTHY, UNSCHEDULABLE, FAILED)
BROKEN_STATES = (UNHEALTHY, UNSCHEDULABLE, FAILED)


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
    pid, git commit, message) and never takes part in a diff.
    """

    address: Address
    spec: Mapping[str, Any]
    status: str
    target: str | None = None
    provider: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()

    @property
    def fingerprint(self) -> str:
        """What a saved plan records: a change to the spec or the health makes the plan stale."""
        return digest({"target": self.target, "spec": self.spec, "status": self.status})
