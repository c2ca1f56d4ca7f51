"""One listening socket per service port, kept by a small process that outlives every version.

Why: two versions on one port with SO_REUSEPORT have two accept queues, and connections queued on
the old one are reset when it closes unless the kernel migrates them (``tcp_migrate_req``, off on
most machines). Here the keeper binds the port once and hands the very same listening socket to
each instance over a unix socket (SCM_RIGHTS); all versions accept from one queue, so the old one
can stop accepting at any moment and nothing queued is lost, whatever the sysctl says. It also
means nothing else can ever bind the port behind our back, and "what listens on the port" is one
socket, always.

The keeper writes its own record (``--record``) once it holds the port, so no apply killed at any
moment can leave a keeper nobody knows of; and it stops by itself when that record disappears or
names another process (the service was deleted, the state folder removed), so a keeper never
outlives what it serves. A keeper started with ``--adopt-from PID`` takes the listener over from a
running instance (whose keeper was killed) instead of binding: the port never changes hands.

The keeper never accepts a TCP connection itself. It stops on SIGTERM (the service was deleted).

    python -m providers.local.portkeeper --host 127.0.0.1 --port 8080 --socket /tmp/mlops-ports-0/ab.sock \
        --record .mlops/ports/api-8080.json [--target dev --engine process] [--adopt-from PID]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

BACKLOG = 4096
RECORD_CHECK_S = 2.0
"""How often the keeper checks that its record still names it."""


def _own_start_id() -> str:
    stat = Path("/proc/self/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()[19]


def _write_record(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _still_ours(path: Path) -> bool:
    try:
        return int(json.loads(path.read_text()).get("pid", 0)) == os.getpid()
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True   # a record being rewritten or unreadable: stay, the next check decides


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    """pidfd_getfd(2) (Linux 5.6): a copy of another process's descriptor (needs ptrace rights on it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    got = libc.syscall(438, pidfd, fd, 0)   # 438: pidfd_getfd on every architecture
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(got)


def adopt(pid: int, host: str, port: int) -> socket.socket:
    """The listening socket on ``host:port`` that process ``pid`` holds, duplicated into this one."""
    pidfd = os.pidfd_open(pid)
    problem = "it holds no listening socket on that port"
    try:
        for entry in sorted(Path(f"/proc/{pid}/fd").iterdir(), key=lambda p: int(p.name)):
            try:
                if not os.readlink(entry).startswith("socket:"):
                    continue
                fd = _pidfd_getfd(pidfd, int(entry.name))
            except OSError as exc:
                problem = exc.strerror or str(exc)
                continue
            sock = socket.socket(fileno=fd)
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                where = sock.getsockname() if sock.type == socket.SOCK_STREAM else None
            except OSError:
                listening, where = 0, None
            if listening and isinstance(where, tuple) and where[0] == host and where[1] == port:
                sock.setblocking(True)
                return sock
            sock.close()
    finally:
        os.close(pidfd)
    raise OSError(0, f"cannot take {host}:{port} over from pid {pid}: {problem}")


def serve(host: str, port: int, path: Path, record: Path | None = None, owner: tuple[str, str] = ("", ""),
          adopt_from: int = 0) -> int:
    listener: socket.socket
    if adopt_from:
        try:
            listener = adopt(adopt_from, host, port)
        except OSError as exc:
            print(f"portkeeper: {exc.strerror or exc}", file=sys.stderr, flush=True)
            return 4
    else:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as exc:
            print(f"portkeeper: cannot bind {host}:{port}: {exc.strerror}", file=sys.stderr, flush=True)
            return 3
        listener.listen(BACKLOG)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        control.bind(str(path))
    finally:
        os.umask(old_umask)
    control.listen(64)
    if record is not None:
        _write_record(record, {"pid": os.getpid(), "start_id": _own_start_id(), "port": port, "socket": str(path),
                               "target": owner[0], "engine": owner[1]})
        control.settimeout(RECORD_CHECK_S)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C of an apply must not close the port
    how = f"took {host}:{port} over from pid {adopt_from}" if adopt_from else f"holding {host}:{port}"
    print(f"portkeeper: {how}; handing it out at {path}", flush=True)
    try:
        while True:
            try:
                conn, _ = control.accept()
            except TimeoutError:
                if record is not None and not _still_ours(record):
                    print(f"portkeeper: my record {record} is gone; releasing {host}:{port}", flush=True)
                    return 0
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                socket.send_fds(conn, [b"L"], [listener.fileno()])
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        control.close()
        listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portkeeper")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--record", type=Path, help="write this keeper's record here; stop when it goes")
    parser.add_argument("--target", default="", help="the target the service belongs to (written in the record)")
    parser.add_argument("--engine", default="process", help="process or docker (written in the record)")
    parser.add_argument("--adopt-from", type=int, default=0,
                        help="take the listener over from this process instead of binding the port")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.socket, args.record, (args.target, args.engine), args.adopt_from)


if __name__ == "__main__":
    sys.exit(main())
