"""The Docker engine: services as containers built from content-addressed images.

``DockerLocalProvider`` is the local target's ``engine: docker`` variant; planner.build drives what
the CLI wires to ``mlops build`` and ``mlops logs --build``. It is loaded on first use, so the
image builder (``providers.images``, which every image-running target shares) can import this
package's building blocks without importing the provider that uses it.
"""

from typing import Any

from .image import DEFAULT_BASE_IMAGE

__all__ = ["DEFAULT_BASE_IMAGE", "DockerLocalProvider"]


def __getattr__(name: str) -> Any:
    if name == "DockerLocalProvider":
        from .provider import DockerLocalProvider

        return DockerLocalProvider
    raise AttributeError(name)
