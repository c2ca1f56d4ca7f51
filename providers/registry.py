"""Finds provider classes by target kind through the ``mlops.providers`` entry points.

Third parties add a target kind by shipping a package with such an entry point. Kinds are
listed without importing anything; a kind's class is loaded the first time that kind is used,
so one broken plugin fails only the commands that use its kind, with an error naming it. Two
packages claiming one kind name is an error naming both. A class written for another provider
protocol version gets a clear error, not a traceback later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from planner.core.errors import MlopsError, missing_extra

from . import sdk
from .base import PROTOCOL, RETIRED, Provider, retired_members, variant_of

GROUP = "mlops.providers"
_extra: dict[str, type[Provider]] = {}
_loaded: dict[str, type[Provider]] = {}
_lock = threading.Lock()
_points: dict[str, list[EntryPoint]] | None = None


def register(kind: str, cls: type[Provider]) -> None:
    """Register a provider class in-process (tests, embedding); entry points are the usual way."""
    check(kind, cls)
    _extra[kind] = cls


def unregister(kind: str) -> None:
    _extra.pop(kind, None)


def refresh() -> None:
    """Forget what was found and loaded (after installing a plugin in-process; tests)."""
    global _points
    with _lock:
        _points = None
        _loaded.clear()


def _entry_points() -> dict[str, list[EntryPoint]]:
    global _points
    if _points is None:
        found: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=GROUP):
            same = found.setdefault(ep.name, [])
            if all(other.value != ep.value for other in same):   # one package seen twice is one
                same.append(ep)
        _points = found
    return _points


def _package(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def check(kind: str, obj: object) -> None:
    """A usable provider class, speaking our protocol version, or a one-line error naming the plugin."""
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise MlopsError(f"provider plugin {kind!r} does not give a Provider subclass (got {obj!r})")
    version = getattr(obj, "protocol", 1)
    if version != PROTOCOL:
        raise MlopsError(f"provider plugin {kind!r} ({obj.__module__}.{obj.__qualname__}) implements provider "
                         f"protocol {version}; this mlops speaks protocol {PROTOCOL}: upgrade the plugin")
    retired = retired_members(obj)
    if retired:
        raise MlopsError(f"provider plugin {kind!r} ({obj.__module__}.{obj.__qualname__}) defines "
                         f"{', '.join(retired)}, which this mlops no longer asks for: answer "
                         f"{', '.join(RETIRED[n] for n in retired)} instead (upgrade the plugin)")


def kinds() -> list[str]:
    """Every installed kind name, without importing any plugin."""
    return sorted(set(_entry_points()) | set(_extra))


def load(kind: str) -> type[Provider]:
    """The class of one kind (loaded once); unknown, duplicate or broken kinds fail here only."""
    if kind in _extra:
        return _extra[kind]
    with _lock:
        if kind in _loaded:
            return _loaded[kind]
        points = _entry_points().get(kind)
        if not points:
            raise MlopsError(f"unknown provider {kind!r} (installed: {', '.join(kinds()) or 'none'})")
        if len(points) > 1:
            raise MlopsError(f"provider kind {kind!r} is claimed by several packages: "
                             + " and ".join(f"{_package(ep)} ({ep.value})" for ep in points)
                             + "; uninstall one")
        ep = points[0]
        try:
            with sdk.importing():   # the plugin's module imports its SDK: never beside another thread's
                cls = ep.load()
        except Exception as exc:
            hint = missing_extra(exc)
            raise MlopsError(f"provider plugin {kind!r} ({ep.value}, from {_package(ep)}) failed to load: "
                             + (hint or f"{type(exc).__name__}: {exc}")) from exc
        check(kind, cls)
        _loaded[kind] = cls
        return cls


class _Kinds(Mapping[str, type[Provider]]):
    """Kind name -> class, loading a class only when it is looked up."""

    def __getitem__(self, kind: str) -> type[Provider]:
        if kind not in self:
            raise KeyError(kind)
        return load(kind)

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, str) and (kind in _extra or kind in _entry_points())

    def __iter__(self) -> Iterator[str]:
        return iter(kinds())

    def __len__(self) -> int:
        return len(kinds())


def available() -> Mapping[str, type[Provider]]:
    """All provider kinds, as a mapping that loads a class only when asked for it."""
    return _Kinds()


def provider_class(kind: str, config: Mapping[str, Any] | None = None) -> type[Provider]:
    """The class for a target kind, resolved to the variant its settings ask for."""
    cls = variant_of(load(kind), config or {"provider": kind})
    check(kind, cls)
    return cls
