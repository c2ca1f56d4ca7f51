"""Logging for the runtime: one format, stderr, level from settings, one access line per request.

Access lines are ``key=value`` pairs (logfmt), so they are both readable and machine-parsable.
Request bodies are never logged, and keys cannot be (they are not in any logged structure).
Probe routes (``/``, ``/ready``) are logged at DEBUG so that orchestrator probes do not flood
the log.
"""

from __future__ import annotations

import logging
import sys

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


def access(method: str, path: str, status: int, size: int, ms: float, request_id: str) -> None:
    """Write the single access line of a request."""
    level = logging.DEBUG if path in ("/", "/ready") else logging.INFO
    if access_log.isEnabledFor(level):
        access_log.log(
            level,
            "method=%s path=%s status=%d bytes=%d ms=%.3f request_id=%s",
            method, path, status, size, ms, request_id,
        )
