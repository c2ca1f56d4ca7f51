"""The manifest's bytes, read as hostile input: a regular file of bounded size, never a blocking read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ManifestError, MlopsError, Problem
from ..yamlpos import DEFAULT_MANIFEST_KIB, LIMIT_VARIABLE, max_manifest_kib, one_line

MAX_MANIFEST_BYTES = DEFAULT_MANIFEST_KIB * 1024
"""The default; ``MLOPS_MAX_MANIFEST_KIB`` raises it (see yamlpos.max_manifest_kib). Far above any real
manifest (100 services take ~60 KB); keeps validate well under 2 s."""


def max_manifest_bytes() -> int:
    return max_manifest_kib() * 1024


def read_manifest_bytes(path: Path, shown: str) -> bytes:
    """The manifest's bytes: a regular file, at most MAX_MANIFEST_BYTES, never a blocking read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MlopsError(f"{shown}: manifest not found (create one from ml.yaml.example or pass -f FILE)") from None
    except (OSError, ValueError) as exc:
        raise MlopsError(f"{shown}: cannot read manifest: {why(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError([Problem(shown, 1, 1, "the manifest is not a regular file (a FIFO, a device or a "
                                                  "folder); pass the path of an ml.yaml file")])
    limit = max_manifest_bytes()
    if st.st_size > limit:
        raise ManifestError([Problem(shown, 1, 1, f"the manifest is {st.st_size} bytes, over the limit of "
                                                  f"{limit // 1024} KiB; split the project (or raise "
                                                  f"{LIMIT_VARIABLE})")])
    try:
        raw = read_regular(path, limit)
    except OSError as exc:
        raise MlopsError(f"{shown}: cannot read manifest: {why(exc)}") from None
    if raw is None:
        raise ManifestError([Problem(shown, 1, 1, f"the manifest is over the limit of "
                                                  f"{limit // 1024} KiB; split the project (or raise "
                                                  f"{LIMIT_VARIABLE})")])
    return raw


def read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes (None past ``limit``); opened non-blocking so a FIFO cannot hang us."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(0, "not a regular file")
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "the name holds a NUL character" if "null" in str(exc) else one_line(str(exc), 80)
