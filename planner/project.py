"""One manifest's working set: the loaded manifest, its providers, its store, its provenance."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from providers.base import ProjectContext, Provider
from providers.registry import provider_class
from providers.store import Store

from .addresses import Address
from .desired import build_desired
from .gitinfo import describe
from .hashing import ContentHasher
from .manifest import Manifest, load_manifest
from .resources import Live, Resource


def cache_dir() -> Path:
    """Machine-wide cache (virtualenvs shared by projects): $MLOPS_CACHE_DIR or ~/.cache/mlops."""
    return Path(os.environ.get("MLOPS_CACHE_DIR") or Path.home() / ".cache" / "mlops")


class Project:
    """Everything one command needs about one manifest, built lazily and once."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.context = ProjectContext(
            project=manifest.project,
            root=manifest.root.resolve(),
            state_dir=manifest.state_dir,
            cache_dir=cache_dir(),
            git=describe(manifest.root),
        )
        self.store = Store(self.context)
        self.hasher = ContentHasher(manifest.state_dir / "cache" / "hashes.json")

    @classmethod
    def load(cls, path: Path) -> Project:
        return cls(load_manifest(path))

    @cached_property
    def providers(self) -> dict[str, Provider]:
        """One provider per declared target."""
        return {
            name: provider_class(config["provider"], config)(target=name, config=config, context=self.context)
            for name, config in self.manifest.targets.items()
        }

    def provider_for(self, live_or_target: Live | str) -> Provider:
        """The provider of a target by name; a live service on an undeclared target gets a bare one."""
        if isinstance(live_or_target, str):
            return self.providers[live_or_target]
        target = live_or_target.target or ""
        if target in self.providers:
            return self.providers[target]
        kind = live_or_target.provider or "local"
        config = {"provider": kind}
        if live_or_target.details.get("engine"):
            config["engine"] = live_or_target.details["engine"]
        return provider_class(kind, config)(target=target, config=config, context=self.context)

    def desired(self) -> dict[Address, Resource]:
        try:
            return build_desired(self.manifest, self.providers, self.store, self.hasher)
        finally:
            self.hasher.save()

    def live(self) -> dict[Address, Live]:
        """What really exists: registry entries and every target's services."""
        found: list[Live] = [*self.store.read_models(), *self.store.read_environments()]
        seen_kinds: set[str] = set()
        for provider in self.providers.values():
            found.extend(provider.read())
            seen_kinds.add(provider.kind)
        # Services left on targets removed from the manifest are still ours: find them too.
        for kind in sorted(seen_kinds | {"local"}):
            for variant in provider_class(kind).variants():
                found.extend(variant.read_orphans(self.context, set(self.providers)))
        out: dict[Address, Live] = {}
        for live in found:
            out.setdefault(live.address, live)
        return out

    def git(self) -> dict[str, Any]:
        return dict(self.context.git)
