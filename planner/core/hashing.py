"""Canonical hashing of JSON-like data and content hashing of files and folders.

Content hashes are cached by (path, size, mtime_ns) in a small JSON file so that re-planning
with unchanged files never re-reads them; a changed size or mtime forces a real re-hash.

Only regular files are hashed. A folder comes from a pull request, so a symbolic link (to
``/etc/shadow``, to ``/dev/zero``), a FIFO, a socket or a device in it is refused with
:class:`UnsafeFile` instead of being followed or read (which could leak a host file into the
registry or hang the plan job). Files are opened without following links and without blocking,
and checked again after opening, so a file swapped after the walk cannot hang a read either.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

from .errors import MlopsError

_CHUNK = 1 << 20
SKIP_DIRS = frozenset({"__pycache__", ".git", ".mlops", ".pytest_cache", ".ipynb_checkpoints"})
"""Folders never hashed nor shipped: caches, VCS data and the default registry."""


class UnsafeFile(MlopsError):
    """A path that must not be hashed or copied (a link, a FIFO, a device, an unreadable name)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def _kind(mode: int) -> str:
    """What a non-regular file is, in words, for the error message."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def _refusal(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return ("is a symbolic link; mlops never follows links in model and source folders "
                "(replace it with a copy of the file)")
    return f"is {_kind(mode)}; only regular files and folders can be hashed and shipped (remove it)"


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the same data always gives the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: Any) -> str:
    """sha256 hex of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def secret_digest(salt: str, value: str) -> str:
    """A salted digest that shows a secret changed without revealing it."""
    return "sha256:" + hashlib.sha256(f"mlops-secret\0{salt}\0{value}".encode()).hexdigest()[:16]


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except (OSError, ValueError) as exc:
        raise UnsafeFile(path, f"cannot be read ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "the name holds a NUL character" if "null" in str(exc) else str(exc)


def _file_sha256(path: Path) -> str:
    """sha256 of a regular file, opened without following a link and without blocking on a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        mode = _lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(path, _refusal(mode)) from None
        raise UnsafeFile(path, f"cannot be read ({_why(exc)})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(path, _refusal(mode))
        h = hashlib.sha256()
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def iter_files(root: Path) -> list[Path]:
    """Regular files under ``root`` (or ``root`` itself), sorted, skipping caches and VCS folders.

    Never follows a symbolic link and refuses anything that is not a regular file or a folder
    (raises UnsafeFile naming it). Walks with an explicit stack, so any depth is fine.
    """
    mode = _lstat(root).st_mode
    if stat.S_ISREG(mode):
        return [root]
    if not stat.S_ISDIR(mode):
        raise UnsafeFile(root, _refusal(mode))
    out: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise UnsafeFile(folder, f"cannot be read ({_why(exc)})") from None
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            mode = _lstat(path).st_mode
            if stat.S_ISDIR(mode):
                if entry.name not in SKIP_DIRS:
                    subdirs.append(path)
            elif stat.S_ISREG(mode):
                if not entry.name.endswith((".pyc", ".pyo")):
                    out.append(path)
            else:
                raise UnsafeFile(path, _refusal(mode))
        stack.extend(reversed(subdirs))  # depth first, a folder's files before its subfolders
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
        st = _lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(path, _refusal(st.st_mode))
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
        files = iter_files(root)
        base = root if stat.S_ISDIR(_lstat(root).st_mode) else root.parent
        for f in files:
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
