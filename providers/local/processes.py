"""Detached service processes: start, identify (pid + start time, so a reused pid is not ours),
check, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def start_detached(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_file: Path) -> tuple[int, str]:
    """Start ``cmd`` in its own session, output appended to ``log_file``; returns (pid, start id)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    # The CLI exits long before the service; keep no handle, but reap it if this process lives on.
    with _reapers_lock:
        _reapers.append(proc)
    return proc.pid, start_id(proc.pid) or ""


_reapers: list[subprocess.Popen] = []
_reapers_lock = threading.Lock()
"""Apply acts on several services at once: two threads reaping the same child must not both remove it."""


def _reap() -> None:
    with _reapers_lock:
        _reapers[:] = [proc for proc in _reapers if proc.poll() is None]


def start_id(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie is dead, whatever kill(pid, 0) says
        return None
    return fields[19]


def is_running(pid: int, expected_start: str) -> bool:
    _reap()
    return bool(pid) and start_id(pid) == expected_start


def stop(pid: int, expected_start: str, *, timeout: float = 15.0) -> None:
    """SIGTERM (graceful: in-flight requests finish), then SIGKILL after ``timeout``."""
    if not is_running(pid, expected_start):
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid, expected_start):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    for _ in range(100):
        if not is_running(pid, expected_start):
            return
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    """The service leads its own session; signal its group so worker processes go too."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on (or holds) ``port``; connections lingering in TIME_WAIT do not count,
    as they do not stop a listener with SO_REUSEADDR (the port keeper's) from binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def tail(path: Path, lines: int = 20) -> list[str]:
    """Last ``lines`` lines of a log file, read from the end (logs can be large)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def find_marked(variable: str, prefix: str) -> list[tuple[int, str, str]]:
    """Processes whose environment has ``variable`` starting with ``prefix``: (pid, start id, value).

    How instances are found by what really runs, not only by records: an apply killed between
    starting a process and recording it leaves a process that only this scan can see. Children
    that inherited the marker (forked workers) are skipped: their leader stands for them.
    """
    key = f"{variable}={prefix}".encode()
    found: dict[int, tuple[str, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if key not in environ:
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        value = next((v.split(b"=", 1)[1].decode(errors="replace") for v in environ.split(b"\0")
                      if v.startswith(key)), "")
        found[int(entry.name)] = (fields[19], value, int(fields[1]))
    return sorted((pid, start, value) for pid, (start, value, ppid) in found.items() if ppid not in found)
