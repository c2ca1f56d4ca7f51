"""Old source snapshots are removed once no instance runs from them (and never a young one)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from providers.base import ProjectContext
from providers.local import LocalProvider
from providers.local.snapshots import prune, snapshot


def _snap(state: Path, digest: str, age_s: float) -> Path:
    folder = state / "sources" / digest
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "score.py").write_text("x = 1\n")
    (folder / "app" / "score.py").chmod(0o444)
    (folder / ".complete").write_text(digest + "\n")
    old = time.time() - age_s
    os.utime(folder / ".complete", (old, old))
    return folder


def test_prune_keeps_what_runs_and_what_is_young(tmp_path: Path) -> None:
    used = _snap(tmp_path, "a" * 32, 7200)
    old = _snap(tmp_path, "b" * 32, 7200)
    young = _snap(tmp_path, "c" * 32, 60)
    (tmp_path / "sources" / ".staging-x").mkdir()
    assert prune(tmp_path, {"a" * 12}) == ["b" * 32]
    assert used.is_dir() and young.is_dir() and not old.exists()
    assert (tmp_path / "sources" / ".staging-x").is_dir(), "staging folders are snapshot()'s to clean"


def test_the_local_target_prunes_after_it_retires_an_instance(tmp_path: Path) -> None:
    state = tmp_path / ".mlops"
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
    current = snapshot(src, "", state).parent
    stale = _snap(state, "d" * 32, 7200)
    os.utime(current / ".complete", (time.time() - 7200,) * 2)
    meta = state / "local" / "instances" / "api-1234" / "instance.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"spec": {"source": f"src@{current.name[:12]}"}}))
    context = ProjectContext(project="p", root=tmp_path, state_dir=state, cache_dir=tmp_path / "cache")
    LocalProvider(target="local", config={"provider": "local"}, context=context)._prune_snapshots()
    assert current.is_dir() and not stale.exists()
    meta.write_text("{not json")
    again = _snap(state, "e" * 32, 7200)
    LocalProvider(target="local", config={"provider": "local"}, context=context)._prune_snapshots()
    assert again.is_dir(), "an unreadable record may name any snapshot: nothing is removed"
