"""Content hashing: content-addressed, path-aware, and cached by size+mtime across runs."""

from __future__ import annotations

import os
from pathlib import Path

from planner.hashing import ContentHasher


def test_folder_hash_covers_names_and_contents(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.bin").write_bytes(b"1")
    first = ContentHasher().tree_hash(tmp_path / "m")
    (tmp_path / "m" / "a.bin").rename(tmp_path / "m" / "b.bin")
    assert ContentHasher().tree_hash(tmp_path / "m") != first
    (tmp_path / "m" / "b.bin").rename(tmp_path / "m" / "a.bin")
    assert ContentHasher().tree_hash(tmp_path / "m") == first


def test_unchanged_files_are_not_read_again(tmp_path: Path):
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(1 << 16))
    cache = tmp_path / "cache.json"
    cold = ContentHasher(cache)
    digest = cold.file_hash(model)
    cold.save()
    assert cold.files_read == 1

    warm = ContentHasher(cache)  # a later `mlops plan`: a new process, same cache file
    assert warm.file_hash(model) == digest and warm.files_read == 0

    model.write_bytes(os.urandom(1 << 16))  # new content: size is equal, mtime moves
    changed = ContentHasher(cache)
    assert changed.file_hash(model) != digest and changed.files_read == 1


def test_a_corrupt_cache_is_ignored(tmp_path: Path):
    (tmp_path / "cache.json").write_text("{not json")
    (tmp_path / "f").write_text("x")
    assert len(ContentHasher(tmp_path / "cache.json").file_hash(tmp_path / "f")) == 64


def test_the_walk_keeps_the_order_hashes_were_made_with(tmp_path):
    """Fingerprints depend on file order: a folder's files first, then its subfolders, by name."""
    from planner.hashing import iter_files

    for rel in ("b.txt", "a/z.txt", "a/b/c.txt", "a/a.txt", "c/x.pyc", "__pycache__/x.py", "B.txt", "a/.git/x"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    legacy = []
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        dirnames[:] = sorted(d for d in dirnames if d not in {"__pycache__", ".git", ".mlops", ".pytest_cache",
                                                              ".ipynb_checkpoints"})
        legacy.extend(Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo")))
    assert iter_files(tmp_path) == legacy
