"""The Docker engine: services as containers built from content-addressed images.

``DockerLocalProvider`` is the local target's ``engine: docker`` variant; planner.build drives what
the CLI wires to ``mlops build`` and ``mlops logs --build``.
"""

from .image import DEFAULT_BASE_IMAGE
from .provider import DockerLocalProvider

__all__ = ["DEFAULT_BASE_IMAGE", "DockerLocalProvider"]
