"""One apply at a time on a project's local services, whichever checkout it runs from.

Every checkout of a project on this machine shares its local services (their records, port
keepers and keys live in the project's per-user data folder), while the manifest's own apply lock
sits in each checkout's ``.mlops``. So the local engines lock the data folder too: an ``flock`` on
``<data>/apply.lock``, which dies with its process, with the holder written beside it for the
message. Re-entrant within one process: a manifest with several local targets takes it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from planner.core.errors import CancelledError, ProviderError

WAIT_S = 300.0
"""How long an apply waits for another checkout's apply of the same project before it gives up."""

_held: dict[Path, tuple[IO[str], int]] = {}
_guard = threading.Lock()


@contextlib.contextmanager
def project_lock(data_dir: Path, holder: str, checkout: Path, cancel: threading.Event | None = None,
                 *, wait_s: float = WAIT_S) -> Iterator[None]:
    path = (data_dir / "apply.lock").resolve()
    with _guard:
        if path in _held:
            fh, depth = _held[path]
            _held[path] = (fh, depth + 1)
            acquired = False
        else:
            acquired = True
    if acquired:
        fh = _acquire(path, holder, checkout, cancel, wait_s)
        with _guard:
            _held[path] = (fh, 1)
    try:
        yield
    finally:
        with _guard:
            fh, depth = _held[path]
            if depth > 1:
                _held[path] = (fh, depth - 1)
            else:
                del _held[path]
                with contextlib.suppress(OSError):
                    (path.parent / "apply.lock.json").unlink()
                fh.close()   # closing releases the lock


def _acquire(path: Path, holder: str, checkout: Path, cancel: threading.Event | None, wait_s: float) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = path.parent / "apply.lock.json"
    fh = path.open("a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if cancel is not None and cancel.is_set():
                fh.close()
                raise CancelledError("stopped waiting for another apply of this project's local services") from None
            if time.monotonic() >= deadline:
                fh.close()
                raise ProviderError(f"another apply of this project's local services holds {path} "
                                    f"({_holder(info)}) for more than {wait_s:.0f}s; wait for it or stop it") from None
            time.sleep(0.1)
    tmp = info.with_name(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "holder": holder, "checkout": str(checkout)}))
    os.replace(tmp, info)
    return fh


def _holder(info: Path) -> str:
    try:
        data = json.loads(info.read_text())
        return f"{data['holder']} from {data['checkout']}, pid {data['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
