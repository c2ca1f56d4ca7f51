"""One worker process: load the entry script, serve the shared socket with uvicorn, exit with a code.

Each worker imports the script and calls ``init()`` itself (as Azure's gunicorn workers do), so
nothing of the user's is shared between workers. ``init()`` runs after the server started
listening, so liveness answers during a long model load and readiness tells when it is done.

Exit codes (see ``exitcodes``): 0 after SIGTERM/SIGINT once in-flight requests finished; 3 when
the script fails to load or ``init()`` raises, after logging one line that says why; 75 when a
``run()`` call is stuck past its timeout and the worker must be replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from . import exitcodes, logs
from .app import RuntimeApp
from .auth import KeyCheck
from .cors import Cors
from .metrics import Recorder, SharedMetrics
from .routes import Router
from .scorer import Scorer
from .script import ScriptError, load
from .settings import Settings
from .swagger import Swagger

log = logging.getLogger("mlops.runtime")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _fail_script(what: str, exc: BaseException) -> None:
    """Log the traceback, then the one clear line last (providers read the tail of the log)."""
    log.error("%s", "".join(traceback.format_exception(exc)).rstrip())
    log.error("%s: %s: %s", what, type(exc).__name__, exc)
    _flush()


class _StopFlag:
    """SIGTERM/SIGINT before uvicorn took over the signals (or after it gave them back)."""

    def __init__(self) -> None:
        self.requested = False
        self.server: Any = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True


HELD_RECHECK_S = 1.0
"""A rollout's candidate past its ``hold_public_s``: how often it looks whether it may join now."""


class _PublicGate:
    """When this worker joins the public port: once init() finished and the instance is live
    (at once, on SIGUSR1 from the supervisor, or ``hold_s`` after init() at the latest, and
    then only while the route file does not name this version the active candidate). A
    runtime started as a rollout's candidate has no ``hold_s``: SIGUSR1 (promote) alone, so
    an aborted candidate whose abort was interrupted never serves public requests."""

    def __init__(self, live: bool, hold_s: float | None, held: Any = None) -> None:
        self.live, self.hold_s = live, hold_s
        self.held = held or (lambda: False)
        self.join: Any = None          # set once init() finished: joins the listener in the loop
        self.loop: asyncio.AbstractEventLoop | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.live = True
        if self.loop is not None and self.join is not None:
            self.loop.call_soon_threadsafe(self.join)

    async def ready(self, join_now: Any) -> None:
        joined = False

        def join() -> None:
            nonlocal joined
            if not joined:
                joined = True
                asyncio.ensure_future(join_now())

        self.loop, self.join = asyncio.get_running_loop(), join
        loop = self.loop

        def timer() -> None:
            if self.held():
                loop.call_later(HELD_RECHECK_S, timer)
            else:
                join()

        if self.live:
            join()
        elif self.hold_s is not None:
            loop.call_later(self.hold_s, timer)


def run_worker(settings: Settings, sockets: list[socket.socket], deferred: socket.socket | None = None,
               *, live: bool = True, hold_s: float | None = None, metrics: SharedMetrics | None = None,
               recorder: Recorder | None = None) -> int:
    """Serve ``sockets`` until told to stop, and ``deferred`` as well once ``init()`` finished
    (and, with --hold-public, once the deployer said so or ``hold_s`` passed); returns the
    process exit code."""
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    router = None
    if settings.routes_file:
        router = Router(settings.routes_file, settings.revision,
                        on_candidate_change=(lambda _c: recorder.new_candidate()) if recorder is not None else None)
    gate = _PublicGate(live, hold_s, held=(lambda: router.held) if router is not None else None)
    signal.signal(signal.SIGUSR1, gate.on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
    logs.configure(settings.log_level)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # the script's print()s, in order with logs

    try:
        script = load(settings.entry_script, settings.app_root, settings.source_dir)
    except ScriptError as exc:
        if exc.__cause__ is not None:
            log.error("%s", "".join(traceback.format_exception(exc.__cause__)).rstrip())
        log.error("%s", exc)
        _flush()
        return exitcodes.SCRIPT_FAILED

    from .server import make_server  # here, not at module level: keeps `import mlops_runtime` light

    exit_code = exitcodes.OK

    def wedged() -> None:
        nonlocal exit_code
        log.error(
            "run() is still running %d ms after its timeout; replacing this worker",
            settings.scoring_timeout_ms,
        )
        exit_code = exitcodes.REPLACE_WORKER
        app.mark_unready()
        server.stop_accepting()  # the supervisor starts a fresh worker meanwhile
        server.should_exit = True

    def init_failed(exc: BaseException) -> None:
        _fail_script("init() failed", exc)
        os._exit(exitcodes.SCRIPT_FAILED)

    async def join_public() -> None:
        await server.add_listener(deferred)
        log.info("serving the public port")

    async def ready() -> None:
        if deferred is not None:
            await gate.ready(join_public)

    scorer = Scorer(
        script,
        max_concurrent=settings.max_concurrent,
        max_queued=settings.max_queued,
        timeout_ms=settings.scoring_timeout_ms,
        on_wedged=wedged,
        stall_ms=settings.stall_ms,
    )
    app = RuntimeApp(
        script,
        scorer,
        KeyCheck(settings.keys),
        max_body_bytes=settings.max_body_bytes,
        make_swagger=lambda: Swagger(
            Path(settings.app_root),
            script.run,
            script.schema_decorated,
            title=settings.service_name,
            version=settings.service_version,
            path_prefix=settings.service_path_prefix,
        ),
        on_init_failed=init_failed,
        on_ready=ready,
        cors=Cors(settings.cors_origins) if settings.cors_origins else None,
        metrics=metrics,
        recorder=recorder,
        probe_port=settings.probe_port,
        router=router,
    )
    server = make_server(app, settings.graceful_timeout_s, settings.limits, private_port=settings.probe_port)
    stop.server = server
    if stop.requested:
        return exitcodes.OK
    server.run(sockets=sockets)
    _flush()
    return exit_code
