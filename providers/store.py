"""The project's model registry and environment records, read from where every machine can see them.

Declared once in ml.yaml: ``registry: {url: oci://HOST/REPO}`` puts model versions (OCI
artifacts) and environment records in that repository of a shared registry, with credentials
from the environment as for image pushes. Without a URL, the embedded registry is an OCI image
layout in the per-user data folder keyed by project (``$XDG_DATA_HOME/mlops/<project>/registry``),
never in the checkout: a second checkout on this machine sees the same versions, and a plan
writes nothing into the repository. Both go through one code path (``providers.oci.models``).

Model files are used from a per-user cache keyed by content (``<cache>/models/<sha256>``),
filled from the registry by digest when a service needs them (local engines read the folder;
image targets bake it into the service's image, whose tag covers the content hash).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from planner.addresses import Address
from planner.resources import REGISTERED, Live, Resource

from .base import ProjectContext, ProviderError
from .oci.distribution import RemoteRepository, parse_url
from .oci.layout import LayoutRepository
from .oci.models import ModelRegistry
from .oci.repository import Repository
from .userdata import project_data_dir

DEFAULT_SETTLE_S = 20.0
"""Remote registries: how long a new registration stays pending (> PUT latency + 2 x clock skew)."""


def _write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def ensure_state_dir(state_dir: Path) -> None:
    """The checkout's state folder (what apply keeps there), git-ignored from its first byte."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ProviderError(f"{path}: corrupt registry record ({exc}); remove it and re-apply") from None


def embedded_root(project: str) -> Path:
    return project_data_dir(project) / "registry"


def open_repository(project: str, registry: Mapping[str, Any] | None) -> Repository:
    """The repository the manifest declares (``registry.url``), else the embedded one of the project."""
    registry = registry or {}
    url = registry.get("url")
    if not url:
        return LayoutRepository(embedded_root(project))
    try:
        parse_url(str(url))
    except ValueError as exc:
        raise ProviderError(f"registry.url {str(url)[:200]!r}: {exc}") from None
    settle = float(registry.get("settle_seconds", DEFAULT_SETTLE_S))
    return RemoteRepository(str(url), settle_s=settle)


class Store:
    """Models and environments of one project, in its registry."""

    def __init__(self, context: ProjectContext, registry: Mapping[str, Any] | None = None):
        self.context = context
        self.config = dict(registry or {})
        self._registry: ModelRegistry | None = None
        self._opening = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether the registry is one other machines can read (declared by URL)."""
        return bool(self.config.get("url"))

    @property
    def registry(self) -> ModelRegistry:
        """Opened on first use: constructing a Store does no I/O. Once, though apply's threads ask at the
        same moment: one registry, so one cache of its tags and one holder of its lock in this process."""
        if self._registry is not None:
            return self._registry
        with self._opening:
            if self._registry is None:
                self._registry = ModelRegistry(open_repository(self.context.project, self.config))
            return self._registry

    def describe(self) -> str:
        return self.registry.repo.display

    # -- models ---------------------------------------------------------------------------------
    def version_list(self, name: str) -> list[dict[str, Any]]:
        """Versions in registration order, each with its number (None while pending) and provenance."""
        out = []
        for info in self.registry.versions(name):
            details = self.registry.version_details(info)
            out.append({"version": info.number, "sha256": info.sha256, "created": info.created,
                        "source": details.get("dev.mlops.model.source"),
                        "git_commit": details.get("org.opencontainers.image.revision") or None,
                        "git_dirty": details.get("dev.mlops.git.dirty") == "true"})
        return out

    def removed_models(self) -> list[str]:
        """Models destroyed from the project whose versions the registry keeps."""
        return self.registry.removed_models()

    def planned_version(self, name: str, sha256: str) -> int:
        """The version that holds this content, or the number it would get now."""
        return self.registry.planned_version(name, sha256)

    def model_path(self, name: str, sha256: str) -> Path:
        """Where a content's files are used from: a per-user cache keyed by content (no I/O here)."""
        return self.context.cache_dir / "models" / sha256

    def fetch_models(self, models: Mapping[str, Mapping[str, Any]]) -> None:
        """Fill the cache with the files of each model a service uses, from the registry by digest."""
        for name, m in models.items():
            if m.get("sha256"):
                self.registry.fetch(name, str(m["sha256"]), Path(m["path"]))

    def read_models(self) -> list[Live]:
        out = []
        for m in self.registry.current_models():
            spec = {"path": m["source"], "sha256": m["sha256"], "version": m["version"], "tags": m["tags"],
                    "description": m["description"]}
            details = {"git": m["git"], "created": m["updated"], "registry": self.describe()}
            out.append(Live(Address("model", m["name"]), spec, REGISTERED, details=details))
        return out

    def apply_model(self, desired: Resource, progress: Any = None) -> Live:
        name, spec = desired.address.name, desired.spec
        number = self.registry.register(name, Path(desired.inputs["source_path"]), spec["sha256"], spec["path"],
                                        self.context.git, progress=progress)
        self.registry.set_current(name, spec["sha256"], source_rel=spec["path"], tags=spec["tags"],
                                  description=spec["description"], git=self.context.git)
        if number != int(spec["version"]):
            raise ProviderError(
                f"model.{name}: this content was registered as version {number}, not {spec['version']} as planned "
                "(another machine registered a version at the same time); run `mlops plan` again")
        return Live(desired.address, dict(spec), REGISTERED, details={"git": dict(self.context.git)})

    def delete_model(self, name: str) -> None:
        self.registry.remove_current(name)

    # -- applied targets ------------------------------------------------------------------------
    def applied_targets(self) -> dict[str, Any] | None:
        """Which targets the project applied to, as every runner reads it; None: nothing recorded here yet."""
        return self.registry.applied_targets()

    def update_applied_targets(self, update: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        """Read, change and write the record in one step (the embedded registry's lock held; a remote one
        has none, and the last writer wins as for any live setting). ``update`` returning None writes nothing."""
        with self.registry.repo.exclusive():
            record = update(self.registry.applied_targets())
            if record is not None:
                self.registry.set_applied_targets(record)

    # -- environments ---------------------------------------------------------------------------
    def read_environments(self) -> list[Live]:
        return [Live(Address("environment", e["name"]), e["spec"], REGISTERED, details={"git": e["git"]})
                for e in self.registry.environments()]

    def apply_environment(self, desired: Resource) -> Live:
        self.registry.set_environment(desired.address.name, dict(desired.spec), self.context.git)
        return Live(desired.address, dict(desired.spec), REGISTERED, details={"git": dict(self.context.git)})

    def delete_environment(self, name: str) -> None:
        self.registry.remove_environment(name)
