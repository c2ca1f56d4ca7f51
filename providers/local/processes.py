"""Detached service processes: start, identify (pid + start time, so a reused pid is not ours),
check, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
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
    _reapers.append(proc)
    return proc.pid, start_id(proc.pid) or ""


_reapers: list[subprocess.Popen] = []


def _reap() -> None:
    for proc in list(_reapers):
        if proc.poll() is not None:
            _reapers.remove(proc)


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def cutover_note() -> str | None:
    """Why an update on a shared port might reset a few connections, or None when it will not.

    Two instances share the port with SO_REUSEPORT, each with its own accept queue; when the old
    one closes its listener, connections still queued on it are reset unless the kernel migrates
    them to the new listener (net.ipv4.tcp_migrate_req=1, Linux 5.14+).
    """
    try:
        enabled = MIGRATE_REQ.read_text().strip() == "1"
    except OSError:
        return "this kernel cannot migrate queued connections (no tcp_migrate_req); a few may be reset"
    if enabled:
        return None
    return ("net.ipv4.tcp_migrate_req is 0: connections queued on the old instance at cut-over may be reset "
            "(sysctl -w net.ipv4.tcp_migrate_req=1 hands them to the new one)")


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
