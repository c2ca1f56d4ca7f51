"""Why each resource is in the plan: what changed in git between a base revision and the work tree.

The plan says *what* differs between the manifest and the live targets; this says which commits'
edits caused it ("src/score.py changed", "model.pkl changed: new version", "its entry in ml.yaml
changed (deploy.port)"), so a reviewer can tie each change in a pull request's plan to its diff.
The comparison starts from the merge base of REF and HEAD (what a pull request's "Files changed"
shows) and ends at the work tree, so uncommitted edits are explained too. Values are never
reported, only the names of what changed: a secret in the manifest stays out of the comment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import git

from .errors import MlopsError
from .manifest import Manifest
from .plan import changed_paths

SHOWN_FILES = 5
"""Files named per resource before "and N more files"."""


@dataclass(frozen=True)
class ChangeReport:
    """The files changed since ``ref`` and, per resource address, the reasons they explain."""

    ref: str
    base: str
    files: tuple[str, ...]
    reasons: Mapping[str, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "base": self.base, "files": list(self.files),
                "resources": {k: list(v) for k, v in sorted(self.reasons.items())}}


def changed_since(manifest: Manifest, ref: str) -> ChangeReport:
    """Compare the merge base of ``ref`` and HEAD with the work tree holding ``manifest``."""
    try:
        repo = git.Repo(manifest.root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise MlopsError(f"--changed-since {ref}: {manifest.display} is not in a git repository") from None
    try:
        bases = repo.merge_base(repo.commit(ref), repo.head.commit)
    except (git.BadName, ValueError, git.GitCommandError):
        raise MlopsError(f"--changed-since {ref}: no such revision in this repository (in GitHub Actions, check out "
                         "with `fetch-depth: 0` so the base branch is there)") from None
    if not bases:
        raise MlopsError(f"--changed-since {ref}: it shares no history with HEAD")
    base = bases[0]
    top = Path(repo.working_tree_dir or ".").resolve()
    files = _changed_files(repo, base)
    manifest_rel = PurePosixPath(os.path.relpath(manifest.path.resolve(), top)).as_posix()
    try:
        old_text = (base.tree / manifest_rel).data_stream.read().decode()
    except KeyError:
        old_text = ""
    old = _parse(old_text)
    new = _parse(manifest.path.read_text(errors="replace"))
    root = PurePosixPath(os.path.relpath(manifest.root.resolve(), top).replace(os.sep, "/"))
    reasons = _explain(manifest, old if isinstance(old, dict) else {}, new if isinstance(new, dict) else {},
                       files, root, PurePosixPath(manifest_rel).name)
    return ChangeReport(ref=ref, base=base.hexsha, files=tuple(sorted(files)),
                        reasons={k: tuple(v) for k, v in sorted(reasons.items()) if v})


def _changed_files(repo: git.Repo, base: git.Commit) -> dict[str, str]:
    """Repository-relative path -> git change letter (A, D, M, R), committed or not."""
    out: dict[str, str] = {}
    for d in base.diff(None, M=True):
        kind = d.change_type[0]
        if kind == "R" and d.a_path:
            out[d.a_path] = "D"
        out[d.b_path or d.a_path] = "A" if kind == "R" else kind
    for path in repo.untracked_files:
        out[path] = "A"
    return out


def _explain(manifest: Manifest, old: Mapping[str, Any], new: Mapping[str, Any], files: Mapping[str, str],
             root: PurePosixPath, manifest_name: str) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}

    def add(address: str, why: str) -> None:
        reasons.setdefault(address, []).append(why)

    def under(rel: str) -> list[str]:
        """Changed repository paths at or below a manifest-relative path."""
        target = _join(root, rel)
        return sorted(p for p in files if p == target or p.startswith(target.rstrip("/") + "/"))

    edited = {section: _entry_changes(old.get(section), new.get(section), manifest_name)
              for section in ("targets", "models", "environments", "services")}
    for section, kind in (("models", "model"), ("environments", "environment"), ("services", "service")):
        for name, why in edited[section].items():
            add(f"{kind}.{name}", why)

    changed_models: set[str] = set()
    for name, spec in manifest.section("models").items():
        paths = under(str(spec.get("path", "")))
        if paths:
            changed_models.add(name)
            add(f"model.{name}", f"{_files(paths, files)}: new version")
    changed_models |= set(edited["models"])

    for name, spec in manifest.section("services").items():
        address = f"service.{name}"
        source = under(str(spec.get("source_dir", "")))
        if source:
            add(address, _files(source, files))
        for model in spec.get("models") or ():
            if model in changed_models:
                add(address, f"model `{model}` changed")
        if spec.get("environment") in edited["environments"]:
            add(address, f"environment `{spec['environment']}` changed")
        target = manifest.service_target(spec)
        if target in edited["targets"]:
            add(address, f"target `{target}` changed in {manifest_name}")
    return reasons


def _parse(text: str) -> dict[str, Any]:
    """A manifest version as data, read with the same bounds as validate (a pull request wrote it);
    what cannot be read counts as empty (validate reports the problem itself)."""
    from .manifest import max_manifest_bytes
    from .yamlpos import YamlProblem, load

    if len(text.encode()) > max_manifest_bytes():
        return {}
    try:
        data, _positions = load(text)
    except (YamlProblem, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _entry_changes(old: Any, new: Any, manifest_name: str) -> dict[str, str]:
    """Per named entry of a manifest section: added, removed, or which settings changed."""
    old = old if isinstance(old, Mapping) else {}
    new = new if isinstance(new, Mapping) else {}
    out: dict[str, str] = {}
    for name in sorted(set(old) | set(new), key=str):
        if name not in old:
            out[str(name)] = f"added to {manifest_name}"
        elif name not in new:
            out[str(name)] = f"removed from {manifest_name}"
        elif old[name] != new[name]:
            keys = changed_paths(old[name], new[name])
            out[str(name)] = f"its entry in {manifest_name} changed ({', '.join(k or 'value' for k in keys)})"
    return out


def _files(paths: Iterable[str], kinds: Mapping[str, str]) -> str:
    paths = list(paths)
    verbs = {"A": "added", "D": "deleted", "M": "changed", "T": "changed"}
    shown = [f"`{p}` {verbs.get(kinds[p], 'changed')}" for p in paths[:SHOWN_FILES]]
    if len(paths) > SHOWN_FILES:
        shown.append(f"and {len(paths) - SHOWN_FILES} more files")
    return ", ".join(shown)


def _join(root: PurePosixPath, rel: str) -> str:
    joined = os.path.normpath((root / rel).as_posix()).replace(os.sep, "/")
    return "" if joined == "." else joined
