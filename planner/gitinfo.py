"""Provenance from git: the commit a plan or an apply came from, and whether the tree was dirty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import git


def describe(path: Path) -> dict[str, Any]:
    """``{"commit", "dirty", "branch"}`` for the repository holding ``path``; empty outside git."""
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
