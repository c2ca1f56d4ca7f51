"""The image capability: what every target that runs a service's image shares, written once.

A kind that runs containers (the local docker engine, Container Instances, Kubernetes, IoT Edge)
mixes ``ImageTarget`` into its provider and calls ``init_images`` from its constructor. It then has
the spec's ``image`` field (a content address, so a plan shows which image changes and planning
never asks the engine), the build (and push) that apply and ``mlops build`` use, the build log
behind ``mlops logs --build``, and the registry's pull credentials for the target's nodes. The CLI
asks ``isinstance(provider, BuildsImages)``: a kind that says it runs images cannot forget one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from planner.core.errors import ProviderError
from planner.core.resources import Resource

from ..base import BuildResult, BuildsImages, Progress, ProjectContext
from .build import REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, BuiltImage
from .builder import ImageBuilder


def pull_credentials() -> tuple[str, str] | None:
    """(user, password) for the registry, from the environment only (never the manifest, never printed)."""
    user, password = os.environ.get(REGISTRY_USER_ENV), os.environ.get(REGISTRY_PASSWORD_ENV)
    return (user, password) if user and password else None


class ImageTarget(BuildsImages):
    """Mixed into a provider whose services run as an image built from the service."""

    pulls_from_registry: ClassVar[bool] = True
    """The target's nodes pull the image, so every build must be pushed (the local engine: False)."""
    images: ImageBuilder

    def init_images(self, context: ProjectContext, registry: str | None, *, log_dir: Path) -> None:
        self.images = ImageBuilder(context, registry, log_dir=log_dir)

    # -- the spec -------------------------------------------------------------------------------
    def image_registry(self) -> str | None:
        """Where this target's images are pushed (None: kept in the local engine only)."""
        return self.images.registry

    def image_ref(self, name: str, spec: Mapping[str, Any]) -> str:
        """The image a spec runs, ``repository:tag``, from the spec alone."""
        return self.images.ref(name, spec)

    def with_image(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The service spec plus its ``image`` field."""
        return {**spec, "image": self.image_ref(name, spec)}

    # -- building -------------------------------------------------------------------------------
    def ensure_image(self, desired: Resource, progress: Progress, *, client: Any | None = None,
                     model_sources: Mapping[str, Path] | None = None) -> BuiltImage:
        """Build the image unless its tag exists; push it (required where the nodes pull it)."""
        if self.pulls_from_registry and not self.images.registry:
            where = self.describe()  # type: ignore[attr-defined]   # the Provider it is mixed into
            raise ProviderError(f"{where}: no registry to push images to (its nodes pull them from one); "
                                "set the target's registry")
        built = self.images.ensure(desired, progress, client=client, model_sources=model_sources)
        if self.pulls_from_registry and not built.digest_ref:
            raise ProviderError(f"{desired.address}: the image was not pushed to {self.images.registry!r}")
        return built

    def build_image(self, desired: Resource, progress: Progress, *,
                    model_sources: Mapping[str, Path] | None = None) -> BuildResult:
        built = self.ensure_image(desired, progress, model_sources=model_sources)
        return BuildResult(desired.address.name, built.ref, built.image_id, built.built, built.seconds,
                           built.digest_ref, built.cached_steps, built.steps)

    def build_log(self, name: str) -> Iterator[str]:
        path = self.images.log_file(name)
        if not path.exists():
            raise ProviderError(f"no image build log for service {name!r} yet; run `mlops build {name}`")
        with path.open(errors="replace") as fh:
            for line in fh:
                yield line.rstrip("\n")

    # -- pulling --------------------------------------------------------------------------------
    def pull_credentials(self) -> tuple[str, str] | None:
        """What the target's nodes log in to the registry with; None: an anonymous pull."""
        return pull_credentials() if self.images.registry else None
