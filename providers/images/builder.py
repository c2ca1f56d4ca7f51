"""Service images for every target that runs containers: build, content-addressed tag, push by digest.

Kubernetes, Container Instances, IoT Edge and the local docker engine all run the same image of
a service; it is built in the Docker engine on the machine running apply (``DOCKER_HOST``), tagged
by the digest of what goes into it (so unchanged inputs never rebuild), and pushed to the
target's registry with credentials from the environment (``MLOPS_REGISTRY_USERNAME`` /
``MLOPS_REGISTRY_PASSWORD``, never printed). What comes back names the pushed digest, which is what
a cloud target must run (a tag can be moved; a digest cannot).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.core.errors import ProviderError
from planner.core.resources import Resource

from ..base import Progress, ProjectContext
from . import build as builds
from . import engine
from .build import BuiltImage
from .recipe import Recipe, image_repository, image_tag, recipe_for

__all__ = ["BuiltImage", "ImageBuilder"]


class ImageBuilder:
    """Images of one project's services for one registry (None: kept in the local engine only)."""

    def __init__(self, context: ProjectContext, registry: str | None, *, log_dir: Path):
        self.context = context
        self.registry = registry or None
        self.log_dir = log_dir

    def ref(self, name: str, spec: Mapping[str, Any]) -> str:
        """The image a spec runs, from the spec alone: planning never asks the engine."""
        return f"{image_repository(self.context.project, name, self.registry)}:{image_tag(spec)}"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def recipe(self, desired: Resource, model_sources: Mapping[str, Path] | None = None) -> Recipe:
        return recipe_for(project=self.context.project, service=desired.address.name, spec=desired.spec,
                          inputs=desired.inputs, registry=self.registry, git=self.context.git,
                          model_sources=model_sources)

    def ensure(self, desired: Resource, progress: Progress, *, client: Any | None = None,
               model_sources: Mapping[str, Path] | None = None) -> BuiltImage:
        """Build the image unless its tag exists; push it when there is a registry (digest returned)."""
        cli = client or engine.client()
        recipe = self.recipe(desired, model_sources)
        log_file = self.log_file(desired.address.name)
        try:
            built = builds.build(cli, recipe, progress=progress, log_path=log_file)
        except ProviderError as exc:
            raise ProviderError(f"{desired.address}: {exc}") from None
        if built.built:
            progress(f"image {recipe.tag} built in {built.seconds:.0f}s ({built.cached_steps} of {built.steps} "
                     "steps from cache)")
        if not self.registry:
            return built
        try:
            digest_ref = builds.push(cli, recipe, progress=progress, log_path=log_file)
        except ProviderError as exc:
            raise ProviderError(f"{desired.address}: {exc}") from None
        return BuiltImage(built.ref, built.image_id, built.built, built.seconds, digest_ref,
                          built.cached_steps, built.steps)
