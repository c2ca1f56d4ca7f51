"""The embedded registry: an OCI image layout on disk, in a per-user data folder keyed by project.

It lives outside the checkout (``$XDG_DATA_HOME/mlops/<project>/registry`` or
``~/.local/share/mlops/<project>/registry``), so every checkout of the project on this machine sees
the same versions and a plan writes nothing into the repository. The layout is the standard one
(``oci-layout``, ``index.json``, ``blobs/sha256/…``), so ``oras`` or ``skopeo`` can copy it to a
real registry. Writers take a file lock around each registration, which serialises them: new
entries are always appended, so numbers are final at once (no settle window, unlike a remote).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from planner.errors import ProviderError

from .repository import CHUNK, MANIFEST_TYPE, sha256_digest

REF_NAME = "org.opencontainers.image.ref.name"
RECENT_NS = 2_000_000_000
"""An index written less than this long ago is read again even when its stamp matches the cache."""


class LayoutRepository:
    """An OCI image layout folder used as one repository."""

    settle_s = 0.0

    def __init__(self, root: Path):
        self.root = root
        self.display = f"embedded registry {root}"
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_file: IO[str] | None = None
        self._cached: tuple[tuple[int, int, int], list[dict[str, Any]], dict[str, dict[str, Any]]] | None = None

    # -- files ----------------------------------------------------------------------------------
    def _blob(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
            raise ProviderError(f"{self.display}: not a sha256 digest: {digest[:80]!r}")
        return self.root / "blobs" / "sha256" / hexpart

    def _init(self) -> None:
        """Create the layout once, under the lock: parallel first writers must not write an empty index
        over the one another has just written (an entry would be lost). ``oci-layout`` comes last, so
        once it exists the index does too."""
        if (self.root / "oci-layout").exists():
            return
        with self.exclusive():
            if not (self.root / "index.json").exists():
                self._write_index([])
            if not (self.root / "oci-layout").exists():
                self._write(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def _index(self) -> list[dict[str, Any]]:
        return self._snapshot()[0]

    def _snapshot(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """The index's entries and the same by reference, from one read of the file: parsed again only when
        it changed (it is replaced, never edited). One tuple, so a thread never pairs another's halves."""
        path = self.root / "index.json"
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            # A replaced file may get the old inode back, and timestamps are coarser than writes: trust
            # the stamp only for an index that has been still for a while.
            settled = time.time_ns() - st.st_mtime_ns > RECENT_NS
            cached = self._cached
            if cached is not None and cached[0] == stamp and settled:
                return cached[1], cached[2]
            index = json.loads(path.read_bytes())
            manifests = index["manifests"]
            if not isinstance(manifests, list):
                raise ValueError
        except FileNotFoundError:
            return [], {}
        except (ValueError, KeyError, TypeError):
            raise ProviderError(f"{self.display}: index.json is corrupt; restore it or remove the folder") from None
        entries = [m for m in manifests if isinstance(m, dict)]
        by_ref = {str((m.get("annotations") or {}).get(REF_NAME)): m for m in entries}
        self._cached = (stamp, entries, by_ref)
        return entries, by_ref

    def _by_ref(self, reference: str) -> dict[str, Any] | None:
        return self._snapshot()[1].get(reference)

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        self._cached = None
        self._write(self.root / "index.json", json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests},
            indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Serialise writers of this layout (threads, other processes and checkouts); re-entrant."""
        with self._thread_lock:
            if self._depth == 0:
                self.root.mkdir(parents=True, exist_ok=True)
                self._lock_file = (self.root / ".lock").open("a")
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_file is not None:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                    self._lock_file.close()
                    self._lock_file = None

    # -- blobs ----------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def put_blob(self, digest: str, path: Path | None = None, data: bytes | None = None) -> None:
        self._init()
        dest = self._blob(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                if path is not None:
                    with path.open("rb") as src:
                        while chunk := src.read(CHUNK):
                            h.update(chunk)
                            out.write(chunk)
                else:
                    h.update(data or b"")
                    out.write(data or b"")
            if "sha256:" + h.hexdigest() != digest:
                raise ProviderError(f"{self.display}: content changed while it was registered; try again")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def fetch_blob(self, digest: str, dest: Path) -> None:
        source = self._blob(digest)
        if not source.is_file():
            raise ProviderError(f"{self.display}: blob {digest[:19]}… is missing; register the model again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise ProviderError(f"{self.display}: blob {digest[:19]}… is corrupt; register the model again")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- manifests and tags ---------------------------------------------------------------------
    def get_manifest(self, reference: str) -> bytes | None:
        if reference.startswith("sha256:"):
            path = self._blob(reference)
            return path.read_bytes() if path.is_file() else None
        entry = self._by_ref(reference)
        if entry is None:
            return None
        path = self._blob(str(entry.get("digest")))
        return path.read_bytes() if path.is_file() else None

    def put_manifest(self, reference: str, data: bytes) -> None:
        digest = sha256_digest(data)
        if not self.has_blob(digest):
            self.put_blob(digest, data=data)
        if reference.startswith("sha256:"):
            return
        with self.exclusive():
            manifests = [m for m in self._index() if (m.get("annotations") or {}).get(REF_NAME) != reference]
            manifests.append({"mediaType": MANIFEST_TYPE, "digest": digest, "size": len(data),
                              "annotations": {REF_NAME: reference}})
            self._write_index(manifests)

    def delete_manifest(self, digest: str) -> None:
        with self.exclusive():
            self._write_index([m for m in self._index() if m.get("digest") != digest])

    def tags(self) -> list[str]:
        return [str(ref) for m in self._index() if (ref := (m.get("annotations") or {}).get(REF_NAME))]
