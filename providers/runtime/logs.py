"""Logging for the runtime: one format, stderr, level from settings, one access line per request.

Access lines are ``key=value`` pairs (logfmt), so they are both readable and machine-parsable.
Request bodies are never logged, and keys cannot be (they are not in any logged structure).
Probe routes (``/``, ``/ready``) are logged at DEBUG so that orchestrator probes do not flood
the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import TextIO

RUNTIME = "mlops.runtime"
ACCESS = "mlops.runtime.access"
_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

log = logging.getLogger(RUNTIME)
access_log = logging.getLogger(ACCESS)


def configure(level: str) -> None:
    """Send runtime, user-script (root) and server logs to stderr at ``level``.

    The server's own chatter (uvicorn's start/stop lines) is kept to warnings unless DEBUG.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    server_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        logging.getLogger(name).setLevel(server_level)


def _safe(value: str) -> str:
    """Quote values that could break the line format (spaces, decoded newlines in a path)."""
    if value.isprintable() and " " not in value:
        return value
    return json.dumps(value)


class AccessLog:
    """One line per request, written in batches: at most one ``write(2)`` per event-loop turn.

    Going through ``logging`` costs about a third of the throughput of a trivial ``run()``;
    this writes the same format as the other log lines, honours the configured level, and
    flushes before the loop does anything else, so lines are late by one loop turn at most.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._stamp = ""
        pid = os.getpid()
        self._prefixes = {
            lvl: f" {logging.getLevelName(lvl)} [{pid}] {ACCESS}: " for lvl in (logging.DEBUG, logging.INFO)
        }

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"

    def flush(self) -> None:
        """Write the pending lines now (also called at shutdown)."""
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        stream = self._stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass

    def write(self, method: str, path: str, status: int, size: int, ms: float, request_id: str) -> None:
        """Record one request (probe routes only at DEBUG)."""
        level = logging.DEBUG if path in ("/", "/ready") else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        path, request_id = _safe(path), _safe(request_id)
        line = (
            f"{self._timestamp()}{self._prefixes[level]}"
            f"method={method} path={path} status={status} bytes={size} ms={ms:.3f} request_id={request_id}\n"
        )
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                loop = self._loop or asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._loop = loop
            loop.call_soon(self.flush)
