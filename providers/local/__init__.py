"""The local target: services as processes on this machine (the embedded default)."""

from .provider import LocalProvider

__all__ = ["LocalProvider"]
