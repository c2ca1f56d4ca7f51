"""The parent process: owns the listening socket, forks the workers, and decides the exit code.

Why a parent even with one worker: the socket stays open (connections wait in the backlog)
while a crashed or wedged worker is replaced; an ``init()`` failure in any worker stops the
whole service with exit code 3 instead of a restart loop; SIGTERM reaches every worker, which
finishes its in-flight requests before the parent exits 0. The parent never imports the user's
script or the server library.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from types import FrameType

from . import exitcodes
from .settings import Settings

log = logging.getLogger("mlops.runtime")

BACKLOG = 2048
CRASH_WINDOW_S = 60.0
MAX_CRASHES = 5
"""More unexpected worker deaths than this within the window: stop instead of looping."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind and listen; IPv6 when the host is an IPv6 address. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port)
    sock.set_inheritable(True)
    return sock


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Keeps ``settings.workers`` workers alive until told to stop."""

    def __init__(self, settings: Settings, sockets: list[socket.socket]) -> None:
        self._settings = settings
        self._sockets = sockets
        self._children: set[int] = set()
        self._stopping = False
        self._result = exitcodes.OK
        self._crashes: list[float] = []

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: finishing in-flight requests", signal.Signals(signum).name)
        self._stop_all()

    def _stop_all(self) -> None:
        self._stopping = True
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self) -> None:
        # Signals stay blocked across fork(), so the child can never run the parent's handler
        # (which would signal its siblings); each side unblocks once its own handlers are set.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker()
            self._children.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _become_worker(self) -> None:
        code = exitcodes.ERROR
        try:
            from .worker import run_worker

            for signum in _STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            code = run_worker(self._settings, self._sockets)
        except BaseException:  # noqa: BLE001 - a worker must always leave through os._exit
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _crash_loop(self) -> bool:
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < CRASH_WINDOW_S] + [now]
        return len(self._crashes) > MAX_CRASHES

    def _reap(self, pid: int, code: int) -> None:
        self._children.discard(pid)
        if self._stopping:
            if code not in (exitcodes.OK, exitcodes.SCRIPT_FAILED, -signal.SIGTERM, -signal.SIGINT):
                log.warning("worker %d stopped with %s", pid, _describe(code))
            return
        if code == exitcodes.SCRIPT_FAILED:
            # The worker has logged the reason as its last line; add nothing after it.
            self._result = exitcodes.SCRIPT_FAILED
            self._stop_all()
            return
        if code == exitcodes.REPLACE_WORKER:
            log.warning("worker %d replaced after a stuck run()", pid)
        else:
            log.error("worker %d died (%s); starting a new one", pid, _describe(code))
            if self._crash_loop():
                log.error("workers died %d times within %ds; giving up", MAX_CRASHES + 1, int(CRASH_WINDOW_S))
                self._result = exitcodes.ERROR
                self._stop_all()
                return
        self._spawn()

    def run(self) -> int:
        """Start the workers and wait; returns the exit code of the whole service."""
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        for _ in range(self._settings.workers):
            if not self._stopping:
                self._spawn()
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            self._reap(pid, os.waitstatus_to_exitcode(status))
        for sock in self._sockets:
            sock.close()
        return self._result


def serve(settings: Settings) -> int:
    """Listen, announce the address, run the workers; returns the exit code."""
    try:
        sock = listen(settings.host, settings.port, reuse_port=settings.reuse_port)
        sockets = [sock]
        if settings.probe_port is not None:
            sockets.append(listen(settings.host, settings.probe_port))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return exitcodes.USAGE
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "listening on http://%s:%d (entry script %s, workers %d, auth %s, scoring timeout %d ms)",
        shown,
        port,
        settings.entry_script,
        settings.workers,
        "on" if settings.auth_enabled else "off",
        settings.scoring_timeout_ms,
    )
    return Supervisor(settings, sockets).run()
