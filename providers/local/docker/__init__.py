"""The local kind's docker engine: services as containers built from content-addressed images.

``DockerLocalProvider`` is the local target's ``engine: docker`` variant; planner.build drives what
the CLI wires to ``mlops build`` and ``mlops logs --build``, through the image capability every
image-running target shares (``providers.images``). It is loaded on first use.
"""

from typing import Any

from ...images.recipe import DEFAULT_BASE_IMAGE

__all__ = ["DEFAULT_BASE_IMAGE", "DockerLocalProvider"]


def __getattr__(name: str) -> Any:
    if name == "DockerLocalProvider":
        from .provider import DockerLocalProvider

        return DockerLocalProvider
    raise AttributeError(name)
