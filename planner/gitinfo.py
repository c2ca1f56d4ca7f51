"""Provenance from git: the commit a plan or an apply came from, and whether the tree was dirty."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def in_repository(path: Path) -> bool:
    """Whether git could find a repository for ``path`` (a `.git` above it, or $GIT_DIR): outside
    one, GitPython (about 40 ms to import, and a `git version` run) is not needed at all."""
    if os.environ.get("GIT_DIR"):
        return True
    here = Path(os.path.abspath(path))
    return any((folder / ".git").exists() for folder in (here, *here.parents))


def describe(path: Path) -> dict[str, Any]:
    """``{"commit", "dirty", "branch"}`` for the repository holding ``path``; empty outside git."""
    if not in_repository(path):
        return {}
    import git

    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return {}
    try:
        commit = repo.head.commit.hexsha
    except ValueError:  # a repository with no commit yet
        commit = None
    try:
        branch = repo.active_branch.name
    except TypeError:  # detached HEAD, as in CI checkouts
        branch = None
    return {"commit": commit, "dirty": repo.is_dirty(untracked_files=True), "branch": branch}
