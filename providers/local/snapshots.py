"""Source folders snapshotted by content, so services run only what was applied.

Running ``score.py`` from the work tree means a worker restart (a crash, a scoring timeout) serves
edits that were never applied while ``status`` shows the applied fingerprint, and the import writes
``__pycache__`` into the checkout (which makes the next ``apply --require-clean`` refuse). Like
models, a source folder is copied once per content digest into the state folder
(``<state>/sources/<digest>/app``), exactly the files that were hashed, verified, and made read-only.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from planner.errors import ProviderError
from planner.hashing import ContentHasher, iter_files


def snapshot(source_dir: Path, expected_prefix: str, state_dir: Path) -> Path:
    """The snapshot folder of ``source_dir`` as planned (its digest starts with ``expected_prefix``)."""
    hasher = ContentHasher()
    found = hasher.tree_hash(source_dir)
    if not found.startswith(expected_prefix):
        raise ProviderError(f"{source_dir} changed after it was planned; run `mlops plan` again")
    root = state_dir / "sources"
    final = root / found[:32]
    if (final / ".complete").exists():
        return final / "app"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".staging-*"):      # a killed apply's half copy
        try:
            old = stale.stat().st_mtime < _oldest_live_staging()
        except FileNotFoundError:   # another service's copy of the same folder just became its snapshot
            continue
        if old:
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        app = staging / "app"
        app.mkdir()
        for f in iter_files(source_dir):
            dest = app / f.relative_to(source_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest, follow_symlinks=False)
        if hasher.tree_hash(app) != found:
            raise ProviderError(f"{source_dir} changed while it was copied; run `mlops apply` again")
        for path in app.rglob("*"):
            if path.is_file():
                path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        (staging / ".complete").write_text(found + "\n")
        try:
            os.replace(staging, final)
        except OSError:
            if not (final / ".complete").exists():   # another apply won the race with the same bytes
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "app"


def prune(state_dir: Path, in_use: set[str], *, min_age_s: float = 3600) -> list[str]:
    """Remove snapshots no instance uses (their digests do not start with any of ``in_use``).

    Snapshots younger than ``min_age_s`` stay: another target's apply may have made one and not
    yet written down the instance that will run from it. Returns the digests removed.
    """
    import time

    root = state_dir / "sources"
    removed: list[str] = []
    if not root.is_dir():
        return removed
    cutoff = time.time() - min_age_s
    for folder in root.iterdir():
        if folder.name.startswith(".") or any(folder.name.startswith(p) for p in in_use if p):
            continue
        try:
            if (folder / ".complete").stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _oldest_live_staging() -> float:
    """Staging folders older than an hour cannot belong to a running copy."""
    import time

    return time.time() - 3600
