"""What the model registry needs from an OCI repository: content-addressed blobs and manifests, tags.

Both backends (a remote registry over HTTP, an image layout on disk) implement this, so the
registration and numbering code is one code path whatever holds the data.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = {"mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                "size": 2, "data": "e30="}
EMPTY_BYTES = b"{}"
CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


class Repository(Protocol):
    """One OCI repository (remote or on disk)."""

    display: str
    """How messages name it (never with credentials)."""
    settle_s: float
    """How long a new registration entry stays pending before it gets a number (0: writes are serialised)."""

    def has_blob(self, digest: str) -> bool: ...
    def put_blob(self, digest: str, path: Path | None = None, data: bytes | None = None) -> None: ...
    def fetch_blob(self, digest: str, dest: Path) -> None: ...
    def get_manifest(self, reference: str) -> bytes | None: ...
    def put_manifest(self, reference: str, data: bytes) -> None: ...
    def delete_manifest(self, digest: str) -> None: ...
    def tags(self) -> list[str]: ...
    def exclusive(self) -> contextlib.AbstractContextManager[None]: ...


@contextlib.contextmanager
def no_lock() -> Iterator[None]:
    yield
