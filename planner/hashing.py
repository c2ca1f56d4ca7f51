"""Canonical hashing of JSON-like data and content hashing of files and folders.

Content hashes are cached by (path, size, mtime_ns) in a small JSON file so that re-planning
with unchanged files never re-reads them; a changed size or mtime forces a real re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: Any) -> str:
    """sha256 hex of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def secret_digest(salt: str, value: str) -> str:
    """A salted digest that shows a secret changed without revealing it."""
    return "sha256:" + hashlib.sha256(f"mlops-secret\0{salt}\0{value}".encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def iter_files(root: Path) -> list[Path]:
    """Regular files under ``root`` (or ``root`` itself), sorted, skipping caches and VCS folders."""
    if root.is_file():
        return [root]
    skip = {"__pycache__", ".git", ".mlops", ".pytest_cache", ".ipynb_checkpoints"}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo")))
    return out


class ContentHasher:
    """sha256 over files and their relative paths, with a stat-keyed cache persisted to disk."""

    def __init__(self, cache_file: Path | None = None):
        self._cache_file = cache_file
        self._lock = threading.Lock()
        self._cache: dict[str, list] = {}
        self._dirty = False
        self.files_read = 0  # how many files were actually read (tests and benchmarks look at it)
        if cache_file and cache_file.exists():
            try:
                self._cache = json.loads(cache_file.read_text())
            except (OSError, ValueError):
                self._cache = {}

    def file_hash(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
        value = _file_sha256(path)
        with self._lock:
            self.files_read += 1
            self._cache[key] = [*stamp, value]
            self._dirty = True
        return value

    def tree_hash(self, root: Path) -> str:
        """Hash of a file or a folder: relative paths and file contents, order-independent of fs."""
        h = hashlib.sha256()
        base = root if root.is_dir() else root.parent
        for f in iter_files(root):
            rel = f.relative_to(base).as_posix()
            h.update(rel.encode() + b"\0" + self.file_hash(f).encode() + b"\n")
        return h.hexdigest()

    def save(self) -> None:
        if not (self._cache_file and self._dirty):
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._cache))
        os.replace(tmp, self._cache_file)
        self._dirty = False
