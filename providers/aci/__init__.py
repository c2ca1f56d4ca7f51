"""Azure Container Instances: one container group per service (``provider: aci``)."""

from .provider import AciProvider

__all__ = ["AciProvider"]
