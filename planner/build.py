"""`mlops build [SERVICE…]` and `mlops logs --build`: images without deploying them.

Generic over targets: a service can be built when its target's provider has the image capability
(``isinstance(provider, BuildsImages)``); the provider does the work and returns a frozen BuildResult.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from providers.base import BuildResult, BuildsImages, KeepsBuildLog

from .addresses import Address
from .errors import MlopsError
from .project import Project

BuildProgress = Callable[[str, str], None]
"""Called with (service name, step text)."""


def image_services(project: Project) -> dict[str, BuildsImages]:
    """Services of the manifest whose target runs images, with their providers."""
    out: dict[str, BuildsImages] = {}
    for name, service in project.manifest.section("services").items():
        provider = project.providers[project.manifest.service_target(service)]
        if isinstance(provider, BuildsImages):
            out[name] = provider
    return out


def build_services(project: Project, names: Sequence[str], progress: BuildProgress) -> list[BuildResult]:
    """Build (and push, with a registry) the images of ``names``, or of every image service if empty.

    Models need not be registered yet: their manifest files go into the image (the same bytes the
    next apply registers, so the image tag is the same).
    """
    services = image_services(project)
    declared = set(project.manifest.section("services"))
    for name in names:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise MlopsError(f"no service {name!r} in the manifest (services: {known})")
        if name not in services:
            raise MlopsError(f"service {name!r} runs on a target without images; `mlops build` needs a target "
                             "with engine: docker")
    if not services:
        raise MlopsError("no service of this manifest runs on a target that builds images; nothing to build")
    desired = project.desired()
    results = []
    for name in names or sorted(services):
        resource = desired[Address("service", name)]
        sources = {m: Path(desired[Address("model", m)].inputs["source_path"]) for m in resource.inputs["models"]}
        results.append(services[name].build_image(resource, lambda step, n=name: progress(n, step),
                                                  model_sources=sources))
    return results


def build_log(project: Project, service: str) -> Iterator[str]:
    """The full output of the service's last image build, line by line."""
    declared = project.manifest.section("services")
    if service not in declared:
        raise MlopsError(f"no service {service!r} in the manifest")
    target = project.manifest.service_target(declared[service])
    provider = project.providers[target]
    if not isinstance(provider, KeepsBuildLog):
        raise MlopsError(f"service {service!r} has no build log (target {target!r} builds nothing for it)")
    return provider.build_log(service)
