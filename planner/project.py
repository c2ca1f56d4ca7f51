"""One manifest's working set: the loaded manifest, its providers, its store, its provenance."""

from __future__ import annotations

import os
from collections.abc import Collection
from functools import cached_property
from pathlib import Path
from typing import Any

from providers.base import ProjectContext, Provider
from providers.keys import KeyStore
from providers.registry import provider_class
from providers.store import Store

from . import applied_targets
from .core.addresses import Address
from .core.errors import MlopsError
from .core.hashing import ContentHasher, digest
from .core.plan import Rules
from .core.redact import REDACTOR
from .core.resources import Live, Resource
from .desired import build_desired
from .gitinfo import describe
from .live import READ_PARALLELISM, LiveState, read_live
from .manifest import DEFAULT_KIND, Manifest, load_manifest
from .urlmask import secrets_in

EMBEDDED_KINDS = (DEFAULT_KIND,)
"""Kinds searched for services on undeclared targets even when no declared target uses them; one that
cannot load (a broken plugin) is left out of that search, never failing a manifest that does not use it."""


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
        self.store = Store(self.context, manifest.data.get("registry"))
        self.keys = KeyStore(self.context.data_dir, legacy=manifest.state_dir)
        # The hash cache is per user, keyed by checkout: a plan writes nothing into the repository.
        self.hasher = ContentHasher(self.context.cache_dir / "hashes" / f"{digest(str(self.context.root))[:16]}.json")
        self._live: LiveState | None = None
        self.removed_target_problems: list[str] = []
        self.read_parallelism = READ_PARALLELISM
        REDACTOR.reference(manifest.references.values)
        REDACTOR.add(*secrets_in(manifest.data))   # tokens in index URLs, a password in arm_endpoint
        for provider in self.providers.values():
            REDACTOR.add(*provider.secret_values())

    @classmethod
    def load(cls, path: Path) -> Project:
        return cls(load_manifest(path))

    @cached_property
    def providers(self) -> dict[str, Provider]:
        """One provider per declared target (constructing one does no I/O)."""
        return {
            name: provider_class(config["provider"], config)(target=name, config=config, context=self.context)
            for name, config in self.manifest.targets.items()
        }

    def provider_for(self, live_or_target: Live | str) -> Provider:
        """A declared target's provider, or the provider that read a live service (any target)."""
        if isinstance(live_or_target, str):
            return self.providers[live_or_target]
        if live_or_target.target in self.providers:
            return self.providers[live_or_target.target]
        reader = self.live_state().readers.get(live_or_target.address)
        if reader is None:
            raise MlopsError(f"{live_or_target.address}: no provider read it (target {live_or_target.target!r}); "
                             "run `mlops plan` again")
        return reader  # type: ignore[return-value]

    def rules_for(self, desired: Resource | None, live: Live | None) -> Rules:
        """The rules of the target that decides a service's change (the desired one, else the live one)."""
        if desired is not None and desired.target:
            return self.provider_for(desired.target).rules(desired, live)
        if live is not None and live.address.kind == "service":
            return self.provider_for(live).rules(desired, live)
        return Rules()

    def desired(self) -> dict[Address, Resource]:
        try:
            found = build_desired(self.manifest, self.providers, self.store, self.hasher)
        finally:
            self.hasher.save()
        for resource in found.values():
            REDACTOR.add(*resource.secrets.values())
        return found

    def live_state(self, *, refresh: bool = False) -> LiveState:
        """What really exists: registry entries and every target's services, read in parallel."""
        if self._live is None or refresh:
            declared = set(self.providers)
            orphan_reads = [
                (lambda v=variant: v.orphans(self.context, declared))
                for cls in self._orphan_searchers() for variant in cls.variants()
            ]
            self.removed_target_problems = []
            try:
                removed = self.removed_targets()
            except Exception as exc:  # noqa: BLE001 - the plan goes on and says what it could not know
                removed = {}
                self.removed_target_problems.append(
                    f"the targets this project applied to could not be read from {self._registry_name()} "
                    f"({type(exc).__name__}: {exc}); services on a target removed from the manifest are not "
                    "planned for deletion")
            orphan_reads += [(lambda n=name, c=config: self._read_removed(n, c))
                             for name, config in sorted(removed.items())]
            self._live = read_live([self.store.read_models, self.store.read_environments], self.providers,
                                   orphan_reads, parallelism=self.read_parallelism)
        return self._live

    def removed_targets(self) -> dict[str, dict[str, Any]]:
        """Targets this project applied to that ``ml.yaml`` no longer declares (embedded kinds, whose
        services ``orphans()`` finds without settings, excepted)."""
        return {name: config for name, config in applied_targets.load(self.store, self.manifest.state_dir).items()
                if name not in self.providers and config["provider"] not in EMBEDDED_KINDS}

    def _registry_name(self) -> str:
        try:
            return self.store.describe()
        except Exception:  # noqa: BLE001 - only for a message about a registry that already failed
            return "the registry"

    def _read_removed(self, name: str, config: dict[str, Any]) -> list[tuple[Provider, Live]]:
        """The services still on a removed target, each with a provider that can delete it; a target
        that cannot be read is a problem the plan names (nothing is planned for it)."""
        try:
            provider = provider_class(config["provider"], config)(target=name, config=config, context=self.context)
            provider.ensure_connected()
            return [(provider, live) for live in provider.read() if live.target == name]
        except Exception as exc:  # noqa: BLE001 - whatever stops the read, the plan says so in one line
            self.removed_target_problems.append(
                f"target {name!r} ({config['provider']}) was removed from the manifest but its services could not "
                f"be read ({type(exc).__name__}: {exc}); nothing is planned for them: declare the target again "
                "to remove them")
            return []

    def remember_targets(self, live: dict[Address, Live]) -> None:
        """After an apply: remember the declared targets, and removed ones that still run services."""
        declared = {name: applied_targets.shareable(p.config, type(p).schema().secret)
                    for name, p in self.providers.items()}
        applied_targets.remember(self.store, self.manifest.state_dir, declared,
                                 {lv.target for lv in live.values() if lv.address.kind == "service" and lv.target})

    def _orphan_searchers(self) -> list[type[Provider]]:
        """The classes of the declared kinds, and of the embedded ones that load."""
        used = {p.kind for p in self.providers.values()}
        found = []
        for kind in sorted(used | set(EMBEDDED_KINDS)):
            try:
                found.append(provider_class(kind))
            except MlopsError:
                if kind in used:
                    raise
        return found

    def live(self, *, allow_duplicates: bool = False, only: Collection[str] | None = None) -> dict[Address, Live]:
        """Live resources by address; an address live on two targets is an error unless allowed.

        ``only``: read just these declared targets (and the registry), for a ``--target`` selection
        whose services all have a declared target: the other targets need not even be reachable.
        """
        if only is not None:
            state = read_live([self.store.read_models, self.store.read_environments],
                              {n: p for n, p in self.providers.items() if n in only}, [],
                              parallelism=self.read_parallelism)
        else:
            state = self.live_state(refresh=True)
        if not allow_duplicates:
            state.check_unique()
        return dict(state.resources)

    def git(self) -> dict[str, Any]:
        return dict(self.context.git)
