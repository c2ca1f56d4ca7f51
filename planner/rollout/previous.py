"""The version a service ran before an update, as a Resource apply can put back (a rollback).

Its spec is the live one read before the update; what is not in a spec (the files) is found by
content: a part that did not change is the new version's own; a changed source folder is taken
from a content-addressed copy in the state folder (the local targets keep one per applied
version) or from git at the commit the previous version was deployed from, checked against the
digest its spec names. Anything that cannot be found is one line saying what, never a guess.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.errors import MlopsError
from planner.hashing import ContentHasher
from planner.resources import Live, Resource


class NoPrevious(MlopsError):
    """The previous version cannot be rebuilt here (its files are gone); says which part."""


def previous_resource(before: Live, desired: Resource, *, state_dir: Path, root: Path,
                      store: Any) -> Resource:
    """``before`` as a desired Resource, re-using ``desired``'s inputs where they are the same."""
    spec, now = before.spec, desired.spec
    inputs = dict(desired.inputs)
    inputs["rollout"] = None
    if spec.get("environment") != now.get("environment"):
        raise NoPrevious(f"its environment changed ({spec.get('environment')} -> {now.get('environment')}) and "
                         "the previous one's packages are not recorded here")
    secret_paths = set(before.sensitive) | set(desired.sensitive)
    changed_secrets = [p for p in secret_paths if _at(spec, p) != _at(now, p)]
    if changed_secrets:
        raise NoPrevious(f"a secret setting changed ({', '.join(sorted(changed_secrets))}); its previous value "
                         "is not kept anywhere")
    if spec.get("source") != now.get("source"):
        inputs["source_dir"] = str(_previous_source(str(spec.get("source")), before, state_dir, root))
    inputs["entry_script"] = spec.get("entry_script", inputs.get("entry_script"))
    if spec.get("models") != now.get("models"):
        inputs["models"] = _previous_models(list(spec.get("models") or []), store)
    secrets = {k: v for k, v in desired.secrets.items()}
    return Resource(desired.address, dict(spec), depends_on=desired.depends_on, target=before.target,
                    sensitive=frozenset(before.sensitive), secrets=secrets, inputs=inputs)


def _at(spec: Mapping[str, Any], path: str) -> Any:
    value: Any = spec
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _previous_source(source: str, before: Live, state_dir: Path, root: Path) -> Path:
    """``src@0123456789ab``: the folder holding exactly that content."""
    rel, _, prefix = source.rpartition("@")
    if not prefix:
        raise NoPrevious(f"its spec names no source digest ({source!r})")
    for marker in sorted((state_dir / "sources").glob(f"{prefix}*/.complete")):
        app = marker.parent / "app"
        if marker.read_text().strip().startswith(prefix) and app.is_dir():
            return app
    commit = str((before.details.get("git") or {}).get("commit") or "")
    if commit:
        found = _from_git(root, commit, rel, prefix, state_dir)
        if found is not None:
            return found
    raise NoPrevious(f"its source {source} is neither kept in {state_dir / 'sources'} nor found in git at "
                     f"{commit[:12] or 'an unknown commit'}")


def _from_git(root: Path, commit: str, rel: str, prefix: str, state_dir: Path) -> Path | None:
    """The folder ``rel`` (relative to the manifest) as it was at ``commit``, if its digest matches."""
    try:
        tar = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit, "--", rel or "."],
                             capture_output=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    dest = state_dir / "rollback-sources" / f"{prefix}-{commit[:12]}"
    if not dest.exists():
        staging = dest.with_name(dest.name + ".staging")
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(staging, filter="data")
        staging.rename(dest)
    folder = dest / rel if rel else dest
    try:
        if ContentHasher().tree_hash(folder).startswith(prefix):
            return folder
    except Exception:
        return None
    return None


def _previous_models(models: list[str], store: Any) -> dict[str, dict[str, Any]]:
    """``name:version@sha12`` entries -> what a service's inputs hold, from the model registry."""
    out: dict[str, dict[str, Any]] = {}
    for entry in models:
        name_version, _, short = entry.rpartition("@")
        name, _, version = name_version.rpartition(":")
        match = next((v for v in store.version_list(name) if str(v.get("sha256", "")).startswith(short)), None)
        if match is None:
            raise NoPrevious(f"model {name} version {version} ({short}) is no longer in the registry")
        sha = str(match["sha256"])
        out[name] = {"version": match["version"], "sha256": sha, "path": str(store.model_path(name, sha))}
    return out
