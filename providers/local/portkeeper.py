"""One listening socket per service port, kept by a small process that outlives every version.

Why: two versions on one port with SO_REUSEPORT have two accept queues, and connections queued on
the old one are reset when it closes unless the kernel migrates them (``tcp_migrate_req``, off on
most machines). Here the keeper binds the port once and hands the very same listening socket to
each instance over a unix socket (SCM_RIGHTS); all versions accept from one queue, so the old one
can stop accepting at any moment and nothing queued is lost, whatever the sysctl says. It also
means nothing else can ever bind the port behind our back, and "what listens on the port" is one
socket, always.

The keeper never accepts a TCP connection itself. It stops on SIGTERM (the service was deleted).

    python -m providers.local.portkeeper --host 127.0.0.1 --port 8080 --socket /tmp/mlops-ports-0/ab.sock
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

BACKLOG = 4096


def serve(host: str, port: int, path: Path) -> int:
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

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C of an apply must not close the port
    print(f"portkeeper: holding {host}:{port}; handing it out at {path}", flush=True)
    try:
        while True:
            conn, _ = control.accept()
            with conn, contextlib.suppress(OSError):
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
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.socket)


if __name__ == "__main__":
    sys.exit(main())
