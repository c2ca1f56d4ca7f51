"""One apply at a time per manifest: an advisory file lock that dies with its process."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockedError


@contextmanager
def apply_lock(state_dir: Path, operation: str) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "apply.lock"
    fh = path.open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                info = json.loads(fh.read() or "{}")
            except ValueError:
                info = {}
            raise LockedError(
                f"another mlops {info.get('operation', 'apply')} holds the lock on {path} "
                f"(pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')}); "
                "wait for it to finish and run the command again"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "operation": operation,
                             "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock
