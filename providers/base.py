"""The provider interface every target kind implements, and the context it is given.

A provider is constructed for one named target of one project. It reads what really runs there
(found by our project label), decides provider-specific diff rules (what forces replacement),
and carries out changes idempotently, waiting for a final state.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from planner.errors import MlopsError
from planner.plan import Action, Change
from planner.resources import BROKEN_STATES, Live, Resource


class ProviderError(MlopsError):
    """A provider could not do what was asked; the message says why and, if it can, what to do."""


Progress = Callable[[str], None]
"""Called with a short step description ("building virtualenv", "waiting for readiness")."""


@dataclass(frozen=True)
class ProjectContext:
    """What every provider of one manifest shares: names, folders, provenance."""

    project: str
    root: Path                # the folder holding the manifest; manifest paths are relative to it
    state_dir: Path           # the embedded registry and local records (default <root>/.mlops)
    cache_dir: Path           # machine-wide caches shared by projects (virtualenvs)
    git: Mapping[str, Any] = field(default_factory=dict)   # commit, dirty, branch


@dataclass(frozen=True)
class Endpoint:
    """How to reach a service: its scoring URL and the headers a client must send."""

    scoring_url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    swagger_url: str | None = None


@dataclass(frozen=True)
class BuildResult:
    """One service's image after a build (targets that run images)."""

    service: str
    image: str                 # repository:tag (the content address)
    image_id: str
    built: bool                # False: the tag existed, nothing was rebuilt
    seconds: float
    pushed: str | None         # repository@sha256:… when the target has a registry
    cached_steps: int
    steps: int


class Provider(ABC):
    """One target kind. Subclasses set ``kind`` and implement the abstract methods."""

    kind: ClassVar[str]
    builds_images: ClassVar[bool] = False
    """Whether `mlops build` applies: the target runs an image built from the service."""
    replace_paths: ClassVar[frozenset[str]] = frozenset()
    """Attribute paths of a service spec whose change cannot be made in place."""

    def __init__(self, *, target: str, config: Mapping[str, Any], context: ProjectContext):
        self.target = target
        self.config = dict(config)
        self.context = context

    @classmethod
    def variant(cls, config: Mapping[str, Any]) -> type[Provider]:
        """The class that serves this target's settings (e.g. the local kind's ``engine: docker``).

        One kind may have variants that share its name and target schema but act differently;
        everything that instantiates or validates a target goes through here.
        """
        return cls

    @classmethod
    def variants(cls) -> list[type[Provider]]:
        """Every class ``variant()`` can answer, so live state on undeclared targets is found too."""
        return [cls]

    # -- schema -------------------------------------------------------------------------------
    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        """JSON Schema of this kind's target settings (the mapping under ``targets.<name>``)."""
        return {"type": "object", "properties": {"provider": {"type": "string"}}}

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        """JSON Schema of a service's ``deploy`` settings on this kind of target."""
        return {"type": "object"}

    def runtime_version(self) -> str:
        """Version of what serves the model on this target; part of every service's spec."""
        from .bundle import runtime_version

        return runtime_version()

    def service_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The service spec as this target runs it; a target may add what it derives (an image)."""
        return dict(spec)

    def normalize_deploy(self, deploy: Mapping[str, Any]) -> dict[str, Any]:
        """Deploy settings with defaults filled in, so that omitting a default is not a diff."""
        return dict(deploy)

    # -- live state -----------------------------------------------------------------------------
    @abstractmethod
    def read(self) -> list[Live]:
        """Every service of this project on this target, as it really is."""

    @classmethod
    def read_orphans(cls, context: ProjectContext, declared_targets: set[str]) -> list[Live]:
        """Services of this kind on targets no longer declared (so the plan can delete them).

        Only kinds whose live state can be found without target settings can answer; others
        return nothing and their undeclared targets stay untouched.
        """
        return []

    # -- planning -------------------------------------------------------------------------------
    def plan(self, desired: Resource | None, live: Live | None) -> Change:
        """Decide what to do with one service. Written as ordered early returns, each with a why."""
        from planner.diff import decide

        return decide(desired, live, replace_paths=self.replace_paths, replace_order=self.replace_order(live))

    def replace_order(self, live: Live | None) -> Action:
        """Create the new one before removing the old one, unless the old one is already broken."""
        if live is not None and live.status in BROKEN_STATES:
            return Action.DELETE_THEN_CREATE
        return Action.CREATE_THEN_DELETE

    # -- acting ---------------------------------------------------------------------------------
    @abstractmethod
    def create(self, desired: Resource, progress: Progress) -> Live:
        """Start a new service and wait until it is ready. Idempotent for the same fingerprint."""

    @abstractmethod
    def update(self, desired: Resource, live: Live, progress: Progress) -> Live:
        """Move a running service to ``desired``; on failure the previous version keeps serving."""

    @abstractmethod
    def delete(self, live: Live, progress: Progress) -> None:
        """Remove the instance ``live`` describes and what it owns. Missing is not an error.

        Only that instance: in a create-then-delete replacement the new one, with the same name,
        already runs when this is called.
        """

    # -- using ----------------------------------------------------------------------------------
    @abstractmethod
    def endpoint(self, live: Live) -> Endpoint:
        """Where and how to call the service (headers carry the key; never print them)."""

    @abstractmethod
    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """The service's log lines, oldest first; with ``follow``, keep yielding new ones."""

    def build_image(self, desired: Resource, progress: Progress, *,
                    model_sources: Mapping[str, Path] | None = None) -> BuildResult:
        """Build (and push) the service's image without deploying it; only if ``builds_images``."""
        raise ProviderError(f"{desired.address}: target {self.target!r} ({self.kind}) builds no image")

    def build_log(self, name: str) -> Iterator[str]:
        """The full output of the service's last image build."""
        raise ProviderError(f"service {name!r} has no image build (target {self.target!r} builds no image)")


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it returns true or ``timeout`` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
