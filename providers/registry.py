"""Finds provider classes by target kind through the ``mlops.providers`` entry points.

Third parties add a target kind by shipping a package with such an entry point; the loaded
object is checked before use so a broken plugin gets an error naming it, not a traceback later.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from planner.errors import MlopsError

from .base import Provider

GROUP = "mlops.providers"
_extra: dict[str, type[Provider]] = {}


def register(kind: str, cls: type[Provider]) -> None:
    """Register a provider class in-process (tests, embedding); entry points are the usual way."""
    _check(kind, cls)
    _extra[kind] = cls
    available.cache_clear()


def unregister(kind: str) -> None:
    _extra.pop(kind, None)
    available.cache_clear()


def _check(kind: str, obj: object) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise MlopsError(f"provider plugin {kind!r} does not give a Provider subclass (got {obj!r})")


@cache
def available() -> dict[str, type[Provider]]:
    """All provider kinds: installed entry points, then in-process registrations."""
    found: dict[str, type[Provider]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not hide the others
            raise MlopsError(f"provider plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        _check(ep.name, cls)
        found[ep.name] = cls
    found.update(_extra)
    return found


def provider_class(kind: str, config: Mapping[str, Any] | None = None) -> type[Provider]:
    """The class for a target kind, resolved to the variant its settings ask for."""
    kinds = available()
    if kind not in kinds:
        raise MlopsError(f"unknown provider {kind!r} (installed: {', '.join(sorted(kinds)) or 'none'})")
    cls = kinds[kind].variant(config or {"provider": kind})
    _check(kind, cls)
    return cls
