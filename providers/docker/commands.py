"""What the CLI runs for ``mlops build [SERVICE…]`` and ``mlops logs --build SERVICE``.

Kept here, beside the engine, so the CLI only parses arguments and prints: these functions take
a loaded project, return frozen results, and report progress through a callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner.addresses import Address

from ..base import ProviderError
from .provider import DockerLocalProvider

if TYPE_CHECKING:
    from planner.project import Project

BuildProgress = Callable[[str, str], None]
"""Called with (service name, step text), e.g. ("diabetes-api", "building image …: step 5/16 RUN …")."""


@dataclass(frozen=True)
class BuildResult:
    """One service's image after ``mlops build``."""

    service: str
    image: str                 # repository:tag (the content address)
    image_id: str
    built: bool                # False: the tag existed, nothing was rebuilt
    seconds: float
    pushed: str | None         # repository@sha256:… when the target has a registry
    cached_steps: int
    steps: int


def docker_services(project: Project) -> dict[str, DockerLocalProvider]:
    """Services of the manifest whose target runs images, with their providers."""
    out: dict[str, DockerLocalProvider] = {}
    for name, service in project.manifest.section("services").items():
        provider = project.providers[project.manifest.service_target(service)]
        if isinstance(provider, DockerLocalProvider):
            out[name] = provider
    return out


def build_services(project: Project, names: Sequence[str], progress: BuildProgress) -> list[BuildResult]:
    """Build (and push, with a registry) the images of ``names``, or of every image service if empty.

    Models need not be registered yet: their manifest files go into the image (the same bytes the
    next apply registers, so the image tag is the same).
    """
    services = docker_services(project)
    declared = set(project.manifest.section("services"))
    for name in names:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ProviderError(f"no service {name!r} in the manifest (services: {known})")
        if name not in services:
            raise ProviderError(f"service {name!r} runs on a target without images; `mlops build` needs a target "
                                "with engine: docker")
    if not services:
        raise ProviderError("no service of this manifest runs on a target with engine: docker; nothing to build")
    desired = project.desired()
    results = []
    for name in names or sorted(services):
        resource = desired[Address("service", name)]
        sources = {m: Path(desired[Address("model", m)].inputs["source_path"]) for m in resource.inputs["models"]}
        built = services[name].ensure_image(resource, lambda step, n=name: progress(n, step), model_sources=sources)
        results.append(BuildResult(name, built.ref, built.image_id, built.built, built.seconds, built.digest_ref,
                                   built.cached_steps, built.steps))
    return results


def build_log(project: Project, service: str) -> Iterator[str]:
    """The full output of the service's last image build, line by line."""
    services = docker_services(project)
    if service not in services:
        raise ProviderError(f"service {service!r} has no image build (not on a target with engine: docker)")
    return services[service].build_log(service)
