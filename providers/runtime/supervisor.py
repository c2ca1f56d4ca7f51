"""The parent process: owns the listening socket, forks the workers, and decides the exit code.

Why a parent even with one worker: the socket stays open (connections wait in the backlog)
while a crashed or wedged worker is replaced; an ``init()`` failure in any worker stops the
whole service with exit code 3 instead of a restart loop; SIGTERM reaches every worker, which
finishes its in-flight requests before the parent exits 0. The parent never imports the user's
script or the server library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
import traceback
from types import FrameType

from . import exitcodes, routes
from .metrics import SharedMetrics
from .settings import Settings

log = logging.getLogger("mlops.runtime")

BACKLOG = 2048
CRASH_WINDOW_S = 60.0
MAX_CRASHES = 5
"""More unexpected worker deaths than this within the window: stop instead of looping."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GO_LIVE = signal.SIGUSR1
"""The deployer's word that this instance passed its smoke test: join the public port (--hold-public)."""
_BLOCKED_ACROSS_FORK = (*_STOP_SIGNALS, GO_LIVE)


def bind(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 for an IPv6 host), listening unless told not to.

    A socket bound but not yet listening holds the port while receiving no connections: that is
    how the public port waits for ``init()`` when a probe port is used. Raises OSError.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def receive_listener(path: str) -> socket.socket:
    """The service's listening socket, handed over by its port keeper through ``path`` (SCM_RIGHTS).

    The keeper owns the one listener of the service's port for as long as the service exists; every
    instance accepts on the same socket (one accept queue), so an instance that stops accepting
    leaves queued connections to the next one instead of resetting them.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(path)
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 16, 1)
    if not fds:
        raise OSError(0, f"the port keeper at {path} sent no socket")
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(False)
    return sock


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send SIGTERM to this worker when the supervisor dies, even by
    SIGKILL, so that no orphaned worker keeps serving (and holding the port) on its own."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Keeps ``settings.workers`` workers alive until told to stop."""

    def __init__(self, settings: Settings, sockets: list[socket.socket], deferred: socket.socket | None = None,
                 metrics: SharedMetrics | None = None) -> None:
        self._settings = settings
        self._sockets = sockets
        self._deferred = deferred
        self._metrics = metrics
        self._children: set[int] = set()
        self._slots: dict[int, int] = {}
        """Worker pid -> its metrics slot; a replacement takes the slot of the worker it replaces."""
        self._stopping = False
        self._result = exitcodes.OK
        self._crashes: list[float] = []
        self._pid = os.getpid()
        self._live = settings.hold_public_s is None
        """Whether workers join the public port as soon as their init() finished (else on GO_LIVE)."""
        self._hold_s = settings.hold_public_s
        """When workers join the public port without GO_LIVE: None for a rollout's candidate."""
        if self._hold_s is not None and settings.routes_file \
                and routes.names_candidate(settings.routes_file, settings.revision):
            log.info("started as the rollout's candidate: joining the public port only when promoted")
            self._hold_s = None

    def _on_go_live(self, signum: int, frame: FrameType | None) -> None:
        if not self._live:
            log.info("smoke test passed: joining the public port")
        self._live = True
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, GO_LIVE)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: finishing in-flight requests", signal.Signals(signum).name)
        self._stop_all()

    def _stop_all(self) -> None:
        self._stopping = True
        # The parent's copies of the listeners go now: the kernel closes a listener only when its
        # last descriptor does, and until then connections would queue where no one accepts them
        # (with SO_REUSEPORT they could be going to the instance that replaces this one).
        for sock in self._sockets:
            sock.close()
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self) -> None:
        # Signals stay blocked across fork(), so the child can never run the parent's handler
        # (which would signal its siblings); each side unblocks once its own handlers are set.
        slot = min(set(range(self._settings.workers)) - set(self._slots.values()))
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_ACROSS_FORK)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(slot)
            self._children.add(pid)
            self._slots[pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_ACROSS_FORK)

    def _become_worker(self, slot: int) -> None:
        code = exitcodes.ERROR
        try:
            from .worker import run_worker

            _die_with_parent(self._pid)

            for signum in _STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            # GO_LIVE stays blocked (a pending one is kept) until run_worker has its own handler.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            recorder = self._metrics.recorder(slot) if self._metrics is not None else None
            code = run_worker(self._settings, self._sockets, self._deferred, live=self._live, hold_s=self._hold_s,
                              metrics=self._metrics, recorder=recorder)
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
        self._slots.pop(pid, None)
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
        signal.signal(GO_LIVE, self._on_go_live)
        for _ in range(self._settings.workers):
            if not self._stopping:
                self._spawn()
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            self._reap(pid, os.waitstatus_to_exitcode(status))
        for sock in [*self._sockets, *([self._deferred] if self._deferred else [])]:
            sock.close()
        return self._result


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings) -> int:
    """Bind, announce the address, run the workers; returns the exit code.

    With a probe port, the probe listener serves at once and the public port is joined by each
    worker only when its ``init()`` has finished: an instance that fails to start never takes
    traffic from the one it is meant to replace (``--reuse-port``).
    """
    probing = settings.probe_port is not None
    try:
        if settings.listen_socket:
            public = receive_listener(settings.listen_socket)
        else:
            public = bind(settings.host, settings.port, reuse_port=settings.reuse_port, listen=not probing)
    except OSError as exc:
        where = settings.listen_socket or f"{settings.host}:{settings.port}"
        log.error("cannot listen on %s: %s", where, exc.strerror or exc)
        return exitcodes.USAGE
    probe = None
    if settings.probe_port is not None:
        try:
            probe = bind(settings.host, settings.probe_port)
        except OSError as exc:
            public.close()
            log.error("cannot listen on %s:%d: %s", settings.host, settings.probe_port, exc.strerror or exc)
            return exitcodes.USAGE
    log.info(
        "listening on %s (entry script %s, workers %d, auth %s, scoring timeout %d ms%s)",
        _address(public),
        settings.entry_script,
        settings.workers,
        "on" if settings.auth_enabled else "off",
        settings.scoring_timeout_ms,
        ", reuse-port" if settings.reuse_port else "",
    )
    if probe is not None:
        log.info("probe listener on %s; the public port is served once init() has finished", _address(probe))
        settings = dataclasses.replace(settings, probe_port=probe.getsockname()[1])  # the kernel's, for port 0
        metrics = SharedMetrics(settings.workers, settings.revision) if settings.metrics else None
        return Supervisor(settings, [probe], deferred=public, metrics=metrics).run()
    return Supervisor(settings, [public]).run()
