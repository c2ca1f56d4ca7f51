"""The embedded registry: model versions and environment specs, kept in a folder.

Layout under the state folder (default ``.mlops/`` beside the manifest, git-ignored)::

    models/<name>/<version>/<basename of the registered file or folder>
    models/<name>/<version>.json   sha256, source path, git commit, created
    models/<name>/model.json       current version, tags, description
    environments/<name>.json       the current spec, plus every spec it ever had

Versions are content-addressed: registering content that an existing version already holds
points ``current`` back at that version instead of making a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.addresses import Address
from planner.resources import REGISTERED, Live, Resource

from .base import ProjectContext, ProviderError


def _write_json(path: Path, data: Any) -> None:
    """Atomic write: a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def ensure_state_dir(state_dir: Path) -> None:
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


class Store:
    """Models and environments of one project, in its state folder."""

    def __init__(self, context: ProjectContext):
        self.context = context
        self.models_dir = context.state_dir / "models"
        self.environments_dir = context.state_dir / "environments"

    def _prepare(self) -> None:
        """Create the state folder on first write, git-ignored so registered files never get committed."""
        ensure_state_dir(self.context.state_dir)

    # -- models ---------------------------------------------------------------------------------
    def versions(self, name: str) -> dict[int, dict[str, Any]]:
        folder = self.models_dir / name
        out: dict[int, dict[str, Any]] = {}
        if folder.is_dir():
            for meta in folder.glob("*.json"):
                if meta.stem.isdigit():
                    out[int(meta.stem)] = _read_json(meta)
        return dict(sorted(out.items()))

    def planned_version(self, name: str, sha256: str) -> int:
        """The version that holds this content, or the next free number."""
        versions = self.versions(name)
        for number, meta in versions.items():
            if meta and meta.get("sha256") == sha256:
                return number
        return max(versions, default=0) + 1

    def model_path(self, name: str, version: int) -> Path:
        """Folder of one version (what AZUREML_MODEL_DIR points at for a one-model service)."""
        return self.models_dir / name / str(version)

    def read_models(self) -> list[Live]:
        out = []
        if not self.models_dir.is_dir():
            return out
        for folder in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
            record = _read_json(folder / "model.json")
            if not record:
                continue
            version = record["current"]
            meta = self.versions(folder.name).get(version) or {}
            spec = {
                "path": meta.get("source"),
                "sha256": meta.get("sha256"),
                "version": version,
                "tags": record.get("tags", {}),
                "description": record.get("description", ""),
            }
            details = {"versions": sorted(self.versions(folder.name)), "git": meta.get("git", {}),
                       "created": meta.get("created")}
            out.append(Live(Address("model", folder.name), spec, REGISTERED, details=details))
        return out

    def apply_model(self, desired: Resource) -> Live:
        self._prepare()
        name, spec = desired.address.name, desired.spec
        version = int(spec["version"])
        version_dir = self.model_path(name, version)
        meta_file = version_dir.with_suffix(".json")
        existing = _read_json(meta_file)
        if existing and existing.get("sha256") != spec["sha256"]:
            raise ProviderError(
                f"model {name} version {version} already holds other content (another apply raced this one); re-plan"
            )
        if not existing:
            self._copy_version(Path(desired.inputs["source_path"]), version_dir, spec["sha256"], desired)
            _write_json(meta_file, {"sha256": spec["sha256"], "source": spec["path"],
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "git": dict(self.context.git)})
        _write_json(self.models_dir / name / "model.json",
                    {"current": version, "tags": spec["tags"], "description": spec["description"]})
        return next(m for m in self.read_models() if m.address.name == name)

    def _copy_version(self, source: Path, version_dir: Path, sha256: str, desired: Resource) -> None:
        from planner.hashing import ContentHasher

        version_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=version_dir.parent, prefix=".staging-"))
        try:
            dest = staging / source.name
            # Links are copied as links, never followed (a link to /etc/shadow must not be registered);
            # validate refuses them already, and the hash check below refuses a link that appeared since.
            if source.is_dir():
                shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, dest, follow_symlinks=False)
            # The files may have changed since the plan; registering other content would lie.
            if ContentHasher().tree_hash(dest) != sha256:
                raise ProviderError(
                    f"{desired.address}: {source} changed after it was planned; run `mlops plan` again"
                )
            os.replace(staging, version_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def delete_model(self, name: str) -> None:
        shutil.rmtree(self.models_dir / name, ignore_errors=True)

    # -- environments ---------------------------------------------------------------------------
    def read_environments(self) -> list[Live]:
        out = []
        if not self.environments_dir.is_dir():
            return out
        for record_file in sorted(self.environments_dir.glob("*.json")):
            record = _read_json(record_file)
            if record:
                out.append(Live(Address("environment", record_file.stem), record["spec"], REGISTERED,
                                details={"git": record.get("git", {}), "history": len(record.get("history", []))}))
        return out

    def apply_environment(self, desired: Resource) -> Live:
        self._prepare()
        path = self.environments_dir / f"{desired.address.name}.json"
        record = _read_json(path) or {"history": []}
        spec: Mapping[str, Any] = dict(desired.spec)
        if spec not in record["history"]:
            record["history"].append(spec)
        record.update(spec=spec, git=dict(self.context.git))
        _write_json(path, record)
        return Live(desired.address, spec, REGISTERED, details={"git": dict(self.context.git)})

    def delete_environment(self, name: str) -> None:
        (self.environments_dir / f"{name}.json").unlink(missing_ok=True)
