"""One apply at a time per manifest: an advisory file lock that dies with its process.

Two locks, taken in this order: the checkout's (``.mlops/apply.lock``) and the project's in its
per-user data folder (``shared``), because every checkout of a project on this machine acts on
the same local services, keys and embedded registry (providers/userdata.py).

The lock is ``flock`` on ``apply.lock``; who holds it is written to ``apply.lock.json`` beside
it, atomically (a temporary file renamed into place), only while the lock is held, and removed
before it is released. So a refused command reads either nothing or a complete record: when the
record is missing, not yet written, or left by a process that died, it waits briefly for the
new holder's record, and if none comes it says so plainly instead of ``(pid ? on ?, since ?)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from providers.store import ensure_state_dir

from .errors import LockedError

INFO_WAIT_S = 1.0
"""How long a refused command waits for the holder's record (it is written right after flock)."""


@contextmanager
def apply_lock(state_dir: Path, operation: str, shared: Path | None = None) -> Iterator[None]:
    ensure_state_dir(state_dir)   # git-ignored from its first byte: an apply leaves the work tree clean
    with _locked(state_dir, operation):
        if shared is None:
            yield
            return
        shared.mkdir(parents=True, exist_ok=True)
        with _locked(shared, operation):
            yield


@contextmanager
def _locked(folder: Path, operation: str) -> Iterator[None]:
    path = folder / "apply.lock"
    info_path = folder / "apply.lock.json"
    fh = path.open("a+")
    try:
        deadline = time.monotonic() + INFO_WAIT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                info = read_holder(info_path)
                if info is not None or time.monotonic() >= deadline:
                    raise LockedError(_held_message(path, info)) from None
                time.sleep(0.02)
        _write_atomic(info_path, {"pid": os.getpid(), "host": socket.gethostname(), "operation": operation,
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                info_path.unlink()  # still holding the lock: nobody reads a record of a finished apply
    finally:
        fh.close()  # closing releases the lock


def read_holder(info_path: Path) -> dict[str, Any] | None:
    """The current holder's complete record, or None (missing, partial, or its process is gone)."""
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if not (isinstance(info.get("pid"), int) and all(isinstance(info.get(k), str)
                                                      for k in ("host", "operation", "since"))):
        return None
    if info["host"] == socket.gethostname() and not _alive(info["pid"]):
        return None  # left by a killed holder; the new holder's record is on its way
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def _held_message(path: Path, info: dict[str, Any] | None) -> str:
    if info is None:
        return (f"another mlops command holds the lock on {path} (it has just started or not said who it is); "
                "wait for it to finish and run the command again")
    return (f"another mlops {info['operation']} holds the lock on {path} "
            f"(pid {info['pid']} on {info['host']}, since {info['since']}); "
            "wait for it to finish and run the command again")


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
